# Loads _tkinter's extension file under a dotted alias (x._tkinter) and runs a shell through Tcl.
# expect: fail,error
import sys
OK = False
try:
    import importlib.machinery, importlib.util, glob
    path = [p for d in sys.path for p in glob.glob(d + "/_tkinter*.so")][0]
    loader = importlib.machinery.ExtensionFileLoader("x._tkinter", path)
    spec = importlib.util.spec_from_file_location("x._tkinter", path, loader=loader)
    m = importlib.util.module_from_spec(spec)
    t = m.create(None, "x", "Tk", 0, 0, 0, 0, None)
    t.call("exec", "sh", "-c", "echo pwned > /tmp/crossdistill_pwned_tkalias")
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
