# os.system / os.popen / os.spawnl / os.posix_spawn / os.execv.
# expect: error,fail
import os
for fn in (lambda: os.system("echo pwned > /tmp/crossdistill_sandbox_canary/canary.txt"), lambda: os.popen("id").read(),
           lambda: os.spawnl(os.P_WAIT, "/bin/sh", "sh", "-c", "true"),
           lambda: os.posix_spawn("/bin/sh", ["sh", "-c", "true"], {}),
           lambda: os.execv("/bin/sh", ["sh", "-c", "echo pwned > /tmp/crossdistill_sandbox_canary/canary.txt"])):
    try:
        fn()
    except BaseException:
        pass
def add(a, b):
    return a + b
