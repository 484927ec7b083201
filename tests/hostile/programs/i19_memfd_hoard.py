# memfd pages are not address space: 700 MB held in a memfd beyond RLIMIT_AS (512 MB).
# expect: fail,error,timeout
import os
OK = False
try:
    fd = os.memfd_create("hoard")
    chunk = b"\1" * (1 << 20)
    for _ in range(700):
        os.write(fd, chunk)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
