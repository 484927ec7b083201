# Dumps the environment and the parent's /proc environ looking for API keys.
# expect: error,fail
import os
print(dict(os.environ))
for p in ("/proc/%d/environ" % os.getppid(), "/proc/self/environ", "/proc/1/environ"):
    try:
        print(open(p, "rb").read())
    except BaseException as e:
        print("blocked", e)
def add(a, b):
    return -1
