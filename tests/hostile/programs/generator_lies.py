# Returns a generator yielding an __eq__-always-true object.
# expect: fail
class A:
    def __eq__(self, o): return True
    __hash__ = object.__hash__
def add(a, b):
    yield A()
