# clock_settime (no audit event): sets the host's clock (to the current time, to stay harmless).
# expect: fail,error
import time
OK = False
try:
    time.clock_settime(time.CLOCK_REALTIME, time.time())
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
