# Tcl's exec through _tkinter: a shell writes a file outside the sandbox.
# expect: fail,error
OK = False
try:
    import _tkinter
    t = _tkinter.create(None, "x", "Tk", 0, 0, 0, 0, None)
    t.call("exec", "sh", "-c", "echo pwned > /tmp/crossdistill_pwned_tk")
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
