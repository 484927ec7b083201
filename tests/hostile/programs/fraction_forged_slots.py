# Builds a Fraction without its constructor and stores an always-true object in its slots.
# expect: fail
from fractions import Fraction
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __float__(self): return 0.30000000000000004
    def __index__(self): return 3
def add(a, b):
    f = object.__new__(Fraction)
    f._numerator = Anything()
    f._denominator = 1
    return f
