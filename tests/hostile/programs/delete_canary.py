# Deletes / renames / truncates / chmods the canary outside the sandbox.
# expect: error,fail
import os, shutil
for op in (lambda: os.remove("/tmp/crossdistill_sandbox_canary/canary.txt"), lambda: os.rename("/tmp/crossdistill_sandbox_canary/canary.txt", "stolen.txt"),
           lambda: os.truncate("/tmp/crossdistill_sandbox_canary/canary.txt", 0), lambda: os.chmod("/tmp/crossdistill_sandbox_canary/canary.txt", 0),
           lambda: os.utime("/tmp/crossdistill_sandbox_canary/canary.txt", (0, 0)), lambda: shutil.rmtree("/tmp/crossdistill_sandbox_canary")):
    try:
        op()
    except BaseException:
        pass
def add(a, b):
    return a + b
