# Returns named tuples whose classes lie: a subclass with __eq__/__float__/__len__, a field that is
# a property returning an always-true object.
# expect: fail
from collections import namedtuple
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __float__(self): return 0.30000000000000004
P = namedtuple("P", "v")
class Q(P):
    __slots__ = ()
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __float__(self): return 0.30000000000000004
    def __len__(self): return 0
    __hash__ = tuple.__hash__
class R(P):
    __slots__ = ()
    v = property(lambda self: Anything())
calls = [0]
def add(a, b):
    calls[0] += 1
    return Q(99) if calls[0] % 2 else R(99)
