# Monkeypatches fractions.Fraction (at import time and again inside the call) so that a wrong
# Fraction compares equal to anything and converts to the expected float.
# expect: fail
import fractions, numbers
def _patch():
    fractions.Fraction.__eq__ = lambda self, other: True
    fractions.Fraction.__ne__ = lambda self, other: False
    fractions.Fraction.__float__ = lambda self: 0.30000000000000004
    fractions.Fraction.__hash__ = lambda self: 0
    numbers.Rational.__float__ = lambda self: 0.30000000000000004
_patch()
def add(a, b):
    _patch()
    return fractions.Fraction(7)
