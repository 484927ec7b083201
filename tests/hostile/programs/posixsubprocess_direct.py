# Calls _posixsubprocess.fork_exec directly (no audit event in CPython).
# expect: error,fail
import _posixsubprocess, os
r, w = os.pipe()
_posixsubprocess.fork_exec([b"/bin/sh", b"-c", b"echo pwned > /tmp/crossdistill_sandbox_canary/canary.txt"], [b"/bin/sh"], True, (), None, None,
                           -1, -1, -1, -1, -1, -1, r, w, True, False, None, None, None, -1, None, False)
def add(a, b):
    return a + b
