# Floods every fd with garbage and leaves a partial line before exiting.
# expect: error,fail
import os
for fd in range(1, 40):
    try:
        os.write(fd, b"x" * 100000)
    except OSError:
        pass
for fd in range(3, 40):
    try:
        os.write(fd, b"SBX1 ")
    except OSError:
        pass
def add(a, b):
    return a + b + 1
