# Rebinds print/len/type/isinstance/repr/abs/bool in builtins to lie.
# expect: fail
import builtins
builtins.print = lambda *a, **k: None
builtins.len = lambda x: 3
builtins.type = lambda *a: int
builtins.isinstance = lambda *a: True
builtins.repr = lambda x: "3"
builtins.abs = lambda x: 0
builtins.bool = lambda x: True
def add(a, b):
    return 0
