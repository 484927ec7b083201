# Forges tokens on fds 3..255, dup2s /dev/null over them and closes them.
# expect: error,fail
import os
fake = b"\nSBX1 " + b"c" * 32 + b" pass 3 3 \n"
for fd in range(3, 256):
    try:
        os.write(fd, fake)
    except OSError:
        pass
null = os.open("/dev/null", os.O_WRONLY)
for fd in range(3, 64):
    if fd != null:
        try:
            os.dup2(null, fd)
        except OSError:
            pass
def add(a, b):
    return a + b
