# Re-creates _signal/_thread via _imp, loads _testcapi, reads the wrappers' defaults.
# expect: error,fail
import _imp, sys
class Spec:
    def __init__(self, name, origin=None):
        self.name, self.origin = name, origin
out = []
for fn in (lambda: _imp.create_builtin(Spec("_signal")), lambda: _imp.create_builtin(Spec("_thread")),
           lambda: _imp.create_builtin(Spec("posix")),
           lambda: _imp.create_dynamic(Spec("_testcapi", sys.path[-1] + "/_testcapi.cpython-311-x86_64-linux-gnu.so")),
           lambda: _imp.create_dynamic.__defaults__, lambda: _imp.create_dynamic.__kwdefaults__,
           lambda: _imp.create_dynamic.__code__):
    try:
        out.append(fn())
    except BaseException as e:
        out.append(e)
def add(a, b):
    return 0
