# Reads the parent's environment (API keys) through /proc/<ppid>/environ and prints it.
# expect: fail,error
import os
OK = False
try:
    print(open("/proc/%d/environ" % os.getppid(), "rb").read().decode(errors="replace"))
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
