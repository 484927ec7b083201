# Returns list/str subclasses that lie through __eq__/__len__/__iter__/__contains__.
# expect: fail
class L(list):
    def __eq__(self, o): return True
    def __len__(self): return 3
class S(str):
    def __eq__(self, o): return True
    __hash__ = str.__hash__
calls = [0]
def add(a, b):
    calls[0] += 1
    return L([99]) if calls[0] % 2 else S("nope")
