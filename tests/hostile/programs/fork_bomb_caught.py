# Forks in a loop, swallows errors, then answers CORRECTLY: the attempted fork alone must fail the run.
# expect: fail
import os
for _ in range(50):
    try:
        if os.fork() == 0:
            while True:
                pass
    except BaseException:
        pass

def add(a, b):
    return a + b
