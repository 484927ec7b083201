# Searches gc for the harness nonce/writer and forges a token on fds 3..64.
# expect: error,fail
import gc, os
cands = []
try:
    for o in gc.get_objects():
        if callable(o) and "emit" in getattr(o, "__name__", ""):
            cands.append(o)
except BaseException:
    pass
for fd in range(3, 64):
    for o in cands:
        try:
            o("pass", 3, 3, "", "0" * 32, fd)
        except BaseException:
            pass
    try:
        os.write(fd, b"\nSBX1 " + b"0" * 32 + b" pass 3 3 \n")
    except OSError:
        pass
def add(a, b):
    return 0
