# Keeps frames in gc.garbage (DEBUG_SAVEALL), walks f_back to the harness frame, reads the nonce and
# result fd from f_locals and writes a pass token for a wrong add.
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
        loc = f.f_locals
        if "nonce" in loc and "res_fd" in loc:
            import os
            os.write(loc["res_fd"], ("\nSBX1 %s pass 4 4 00 00\n" % loc["nonce"]).encode())
except Exception:
    pass
def add(a, b):
    return a - b
