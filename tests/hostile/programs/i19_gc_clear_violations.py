# Does something forbidden, then clears the harness's violation list (found through gc.garbage) so the
# run would look clean; the add is right only if the forbidden read worked.
# expect: fail,error
import gc, sys
def _frames():
    gc.set_debug(gc.DEBUG_SAVEALL)
    def boom():
        try:
            raise ValueError("x")
        except ValueError as e:
            e.self = e  # a cycle that keeps the traceback (and its frames) alive
    boom(); gc.collect()
    seen = []
    for o in list(gc.garbage):
        f = getattr(o, "tb_frame", None) if not hasattr(o, "f_back") else o
        while f is not None:
            seen.append(f)
            f = f.f_back
    for o in list(gc.garbage):
        if hasattr(o, "f_back"):
            f = o
            while f is not None:
                seen.append(f); f = f.f_back
    return seen

GOT = False
try:
    open("/etc/passwd").read(); GOT = True
except Exception:
    pass
try:
    for f in _frames():
        v = f.f_locals.get("VIOL")
        if isinstance(v, list):
            v.clear()
except Exception:
    pass
def add(a, b):
    return a + b if GOT else a - b
