# sched_setaffinity on another pid: pins VICTIM to one CPU.
# expect: fail,error
import os
OK = False
try:
    os.sched_setaffinity(VICTIM, {0})
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
