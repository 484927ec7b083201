# Monkeypatches the harness helpers through builtins/__main__/sys.modules.
# expect: error,fail
import sys, builtins
main = sys.modules.get("__main__")
for d in (vars(main) if main else {}, vars(builtins)):
    for k in list(d):
        if "sbx" in k or k.startswith("_h"):
            d[k] = lambda *a, **k: True
builtins.__dict__["__sbx_cmp__"] = lambda *a: True
def add(a, b):
    return 0
