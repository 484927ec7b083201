# 1,000 files of 1 MiB each: every one is under the per-file size limit, together 1 GiB of disk.
# expect: fail,error,timeout
OK = False
try:
    blob = b"x" * (1 << 20)
    for i in range(1000):
        with open("f%d" % i, "wb") as f:
            f.write(blob)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
