# 20,000 empty directories (inodes, and a slow cleanup).
# expect: fail,error,timeout
import os
OK = False
try:
    for i in range(20000):
        os.mkdir("d%d" % i)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
