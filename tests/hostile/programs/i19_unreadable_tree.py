# A tree of directories with mode 000 and a sticky, read-only top (cleanup must still remove it).
# expect: fail,error
import os
OK = False
try:
    os.makedirs("a/b/c")
    open("a/b/c/f", "w").write("x")
    os.chmod("a/b/c", 0)
    os.chmod("a/b", 0)
    os.chmod("a", 0o1000)
    OK = True
except Exception:
    pass
def add(a, b):
    return a - b
