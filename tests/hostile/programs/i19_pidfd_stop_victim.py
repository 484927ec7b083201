# pidfd_send_signal (no audit event) stops another process (VICTIM, bound by the setup).
# expect: fail,error
import os, signal
OK = False
try:
    fd = os.pidfd_open(VICTIM)
    signal.pidfd_send_signal(fd, signal.SIGSTOP)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
