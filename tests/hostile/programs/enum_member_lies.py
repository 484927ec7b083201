# Returns members of Enum classes that lie: __eq__/__float__ overrides, a property named value, an
# always-true object as the member's value.
# expect: fail
import enum
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __float__(self): return 0.30000000000000004
class E(enum.Enum):
    X = 1
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __float__(self): return 0.30000000000000004
class V(enum.Enum):
    Y = Anything()
class I(enum.IntEnum):
    Z = 99
    def __eq__(self, other): return True
    __hash__ = int.__hash__
calls = [0]
def add(a, b):
    calls[0] += 1
    return (E.X, V.Y, I.Z)[calls[0] % 3]
