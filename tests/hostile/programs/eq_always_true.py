# Returns an object whose __eq__ is always True (and __ne__ False, truthy, hashable).
# expect: fail
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __hash__(self): return 0
    def __float__(self): return 3.0
    def __sub__(self, other): return Anything()
    def __abs__(self): return 0
    def __lt__(self, other): return True
def add(a, b):
    return Anything()
