# Uses ctypes to call libc (fork/kill/write) behind the audit hooks.
# expect: error,fail
import ctypes
libc = ctypes.CDLL(None)
libc.fork()
def add(a, b):
    return a + b
