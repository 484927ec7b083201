# os.nice(-10): raises its own priority (root only) above the host's processes.
# expect: fail,error
import os
OK = False
try:
    os.nice(-10)
    OK = os.getpriority(os.PRIO_PROCESS, 0) < 0
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
