# Adds an always-equal class to the harness's trusted-type set found through gc.garbage frames.
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

class Yes:
    def __eq__(self, o): return True
    def __ne__(self, o): return False
    def __hash__(self): return 1
    def __bool__(self): return True
try:
    for f in _frames():
        t = f.f_locals.get("trusted")
        if isinstance(t, set):
            t.add(id(Yes))
except Exception:
    pass
def add(a, b):
    return Yes()
