# Right for ints, wrong for floats, and rebinds the name `math` (imported by the setup code) to a
# fake whose isclose always says yes.
# expect: fail
import types
math = types.SimpleNamespace(isclose=lambda *a, **k: True, pi=3.0)
def add(a, b):
    return a + b if isinstance(a, int) else 0.0
