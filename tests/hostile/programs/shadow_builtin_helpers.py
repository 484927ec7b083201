# Defines functions named like builtins (isinstance, abs, round, float, sorted) that always "agree"
# and a wrong add, hoping the tests' helper calls resolve to them.
# expect: fail
def isinstance(*a): return True
def abs(x): return 0
def round(*a): return 0.3
def float(x): return 0.3
def sorted(x, **k): return [3]
def add(a, b):
    return 0
