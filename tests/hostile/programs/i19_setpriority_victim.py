# setpriority on another pid (no audit event): renices VICTIM.
# expect: fail,error
import os
OK = False
try:
    os.setpriority(os.PRIO_PROCESS, VICTIM, 17)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
