# Returns an int subclass whose __eq__ is always True.
# expect: fail
class LyingInt(int):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = int.__hash__
def add(a, b):
    return LyingInt(12345)
