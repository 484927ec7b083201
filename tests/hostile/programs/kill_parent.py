# SIGKILLs the parent process (the test runner) and its process group.
# expect: error,fail
import os, signal
for fn in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL),
           lambda: os.kill(-1, 0), lambda: os.kill(1, 0)):
    try:
        fn()
    except BaseException:
        pass
def add(a, b):
    return a + b
