# Defines module-level abs/isinstance/set/sorted that always 'match' expected values.
# expect: fail
def abs(x):
    return 0
def isinstance(*a):
    return True
def sorted(x):
    return [3]
def add(a, b):
    return 0
