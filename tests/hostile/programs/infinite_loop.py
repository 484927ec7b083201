# Infinite loop inside the candidate.
# expect: timeout
def add(a, b):
    while True:
        pass
