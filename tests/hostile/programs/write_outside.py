# Writes files outside the sandbox dir (next to the canary, over the canary, /tmp, /etc).
# expect: error,fail
for path in ["/tmp/crossdistill_sandbox_canary/pwned.txt", "/tmp/crossdistill_sandbox_canary/canary.txt", "/tmp/crossdistill_pwned.txt", "/etc/crossdistill_pwned"]:
    try:
        with open(path, "w") as f:
            f.write("pwned")
    except BaseException:
        pass
import os
fd = os.open("/tmp/crossdistill_sandbox_canary/canary.txt", os.O_WRONLY | os.O_TRUNC)
def add(a, b):
    return a + b
