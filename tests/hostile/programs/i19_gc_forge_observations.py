# Reads the tests' sources from the harness frame and appends the expected values as observations.
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

import re
try:
    for f in _frames():
        loc = f.f_locals
        srcs, obs = loc.get("test_srcs"), loc.get("OBS")
        if isinstance(srcs, list) and isinstance(obs, list):
            for i, s in enumerate(srcs):
                m = re.search(r"== *(-?\d+)", s or "")
                if m:
                    obs.append((i, 0, [int(m.group(1))]))
except Exception:
    pass
def add(a, b):
    return 0
