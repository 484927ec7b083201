# FS_IOC_SETFLAGS through fcntl.ioctl: an immutable file that the cleanup cannot delete.
# expect: fail,error
import fcntl, os, array
OK = False
try:
    fd = os.open("keep", os.O_CREAT | os.O_RDONLY, 0o644)
    fcntl.ioctl(fd, 0x40086602, array.array("l", [0x10]))
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
