# Copies the _ctypes extension file into the work dir under another file name and loads it from there.
# expect: fail,error
import sys
OK = False
try:
    import importlib.machinery, importlib.util, glob, shutil
    path = [p for d in sys.path for p in glob.glob(d + "/_ctypes.*.so")][0]
    shutil.copyfile(path, "helpers.so")
    loader = importlib.machinery.ExtensionFileLoader("_ctypes", "helpers.so")
    m = importlib.util.module_from_spec(importlib.util.spec_from_file_location("_ctypes", "helpers.so", loader=loader))
    OK = hasattr(m, "dlopen")
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
