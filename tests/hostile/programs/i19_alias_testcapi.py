# _testcapi loaded as x._testcapi (it can read memory and call C APIs directly).
# expect: fail,error
import sys
OK = False
try:
    import importlib.machinery, importlib.util, glob
    path = [p for d in sys.path for p in glob.glob(d + "/_testcapi*.so")][0]
    loader = importlib.machinery.ExtensionFileLoader("x._testcapi", path)
    m = importlib.util.module_from_spec(importlib.util.spec_from_file_location("x._testcapi", path, loader=loader))
    OK = hasattr(m, "pymem_api_misuse")
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
