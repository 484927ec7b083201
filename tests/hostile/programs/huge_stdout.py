# Prints gigabytes to stdout, then answers wrongly.
# expect: fail,timeout
import sys
line = "x" * 65536 + "\n"
for _ in range(20000):
    sys.stdout.write(line)
def add(a, b):
    return 0
