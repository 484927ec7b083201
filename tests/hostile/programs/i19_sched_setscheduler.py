# sched_setscheduler: makes itself a real-time FIFO task (starves the host) if allowed.
# expect: fail,error
import os
OK = False
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
