# Right answers for ints; for floats returns Fraction(0) after patching Fraction.__float__ so that
# math.isclose sees 0.3 (the class is modified while the tests run).
# expect: fail
from fractions import Fraction
def add(a, b):
    if isinstance(a, int):
        return a + b
    Fraction.__float__ = lambda self: 0.30000000000000004
    return Fraction(0)
