# Writes to /dev/shm and /dev/tty, creates a FIFO outside.
# expect: error,fail
import os
for fn in (lambda: open("/dev/shm/crossdistill_pwned", "w").write("x"), lambda: open("/dev/tty", "w"),
           lambda: os.mkfifo("/tmp/crossdistill_sandbox_canary/fifo")):
    try:
        fn()
    except BaseException:
        pass
def add(a, b):
    return a + b
