# A wrong add that answers 3 to everything (what the first test expects): only real answers pass.
# expect: fail
def add(a, b):
    return 3
