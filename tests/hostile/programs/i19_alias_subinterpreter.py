# A subinterpreter (no audit hook there) from _xxsubinterpreters loaded as x._xxsubinterpreters.
# expect: fail,error
import sys
OK = False
try:
    import importlib.machinery, importlib.util, glob
    path = [p for d in sys.path for p in glob.glob(d + "/_xxsubinterpreters*.so")][0]
    loader = importlib.machinery.ExtensionFileLoader("x._xxsubinterpreters", path)
    m = importlib.util.module_from_spec(importlib.util.spec_from_file_location("x._xxsubinterpreters", path, loader=loader))
    i = m.create()
    m.run_string(i, "open('/tmp/crossdistill_pwned_subinterp', 'w').write('x')")
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
