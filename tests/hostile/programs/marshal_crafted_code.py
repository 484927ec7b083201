# Builds code objects by hand (code.replace, CodeType, marshal) to get memory access.
# expect: error,fail
import marshal, types
f = lambda: 0
out = []
for fn in (lambda: f.__code__.replace(co_code=b"\x00" * 4), lambda: marshal.loads(marshal.dumps(f.__code__)),
           lambda: types.CodeType(*[0] * 16)):
    try:
        out.append(fn())
    except BaseException as e:
        out.append(e)
def add(a, b):
    return a + b
