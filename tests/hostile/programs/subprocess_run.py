# Spawns a shell via subprocess.run to clobber the canary.
# expect: error,fail
import subprocess
subprocess.run(["sh", "-c", "echo pwned > /tmp/crossdistill_sandbox_canary/canary.txt"])
def add(a, b):
    return a + b
