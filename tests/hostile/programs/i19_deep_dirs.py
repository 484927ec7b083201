# A 1,100-level directory chain (recursive deletes hit the recursion limit / PATH_MAX).
# expect: fail,error,timeout
import os
OK = False
try:
    for i in range(1100):
        os.mkdir("dddddddddd")
        os.chdir("dddddddddd")
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
