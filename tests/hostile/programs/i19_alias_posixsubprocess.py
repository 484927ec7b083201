# _posixsubprocess under a dotted alias: its fork_exec is not the patched one; runs a shell.
# expect: fail,error
import sys
OK = False
try:
    import importlib.machinery, importlib.util, glob, os
    path = [p for d in sys.path for p in glob.glob(d + "/_posixsubprocess*.so")][0]
    loader = importlib.machinery.ExtensionFileLoader("x._posixsubprocess", path)
    m = importlib.util.module_from_spec(importlib.util.spec_from_file_location("x._posixsubprocess", path, loader=loader))
    r, w = os.pipe()
    m.fork_exec([b"/bin/sh"], [b"/bin/sh", b"-c", b"echo pwned > /tmp/crossdistill_pwned_psp"], True, (w,), None, None,
                -1, -1, -1, -1, -1, -1, r, w, True, True, False, None, None, None, -1, None, False)
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
