# os.chdir('/') (and fchdir) then writes a relative path.
# expect: error,fail
import os
for fn in (lambda: os.chdir("/"), lambda: os.chdir("/tmp/crossdistill_sandbox_canary"), lambda: os.fchdir(os.open("/", os.O_RDONLY))):
    try:
        fn()
    except BaseException:
        pass
try:
    open("crossdistill_pwned_relative.txt", "w").write("x")
except BaseException:
    pass
def add(a, b):
    return a + b
