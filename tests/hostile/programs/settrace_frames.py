# sys.settrace/setprofile to receive harness frames.
# expect: error,fail
import sys
seen = []
def tracer(frame, event, arg):
    seen.append(frame)
    return tracer
for fn in (lambda: sys.settrace(tracer), lambda: sys.setprofile(tracer)):
    try:
        fn()
    except BaseException:
        pass
def add(a, b):
    return 0
