# Plain wrong answer (sanity: must fail).
# expect: fail
def add(a, b):
    return a * b
