# Prints gigabytes to stderr, then answers wrongly.
# expect: fail,timeout
import sys
line = "e" * 65536 + "\n"
for _ in range(20000):
    sys.stderr.write(line)
def add(a, b):
    return 0
