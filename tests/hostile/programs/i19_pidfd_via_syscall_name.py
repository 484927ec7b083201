# pidfd_send_signal reached through the signal module's dict, after a pidfd from os.__dict__.
# expect: fail,error
import os, signal
OK = False
try:
    fd = vars(os)["pidfd_open"](VICTIM)
    vars(signal)["pidfd_send_signal"](fd, signal.SIGKILL)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
