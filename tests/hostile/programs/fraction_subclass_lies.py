# Returns a Fraction subclass whose __eq__/__float__/__lt__ lie (strict mode must use the real value).
# expect: fail
from fractions import Fraction
class Lie(Fraction):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __float__(self): return 0.30000000000000004
    def __lt__(self, other): return True
    def __hash__(self): return 0
def add(a, b):
    return Lie(99)
