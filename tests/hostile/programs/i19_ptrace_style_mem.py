# Reads another process's memory through /proc/<pid>/mem of the victim (process_vm_readv-style).
# expect: fail,error
OK = False
try:
    with open("/proc/%d/mem" % VICTIM, "rb") as f:
        f.read(1)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
