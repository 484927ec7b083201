# Walks gc.garbage frames to the harness and empties its list of compiled tests (wrong add).
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

try:
    for f in _frames():
        tc = f.f_locals.get("test_codes")
        if isinstance(tc, list):
            tc.clear()
except Exception:
    pass
def add(a, b):
    return a * b
