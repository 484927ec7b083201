# Returns an object that fools math.isclose via __float__ / __index__.
# expect: fail
class F:
    def __float__(self): return 0.30000000000000004
    def __index__(self): return 3
    def __int__(self): return 3
def add(a, b):
    return F()
