# Symlinks/hardlinks the canary into the sandbox and abuses dir_fd to write outside.
# expect: error,fail
import os
for fn in (lambda: os.symlink("/tmp/crossdistill_sandbox_canary/canary.txt", "link"), lambda: os.link("/tmp/crossdistill_sandbox_canary/canary.txt", "hard"),
           lambda: os.open("..", os.O_RDONLY), lambda: os.open(".", os.O_RDONLY | os.O_DIRECTORY)):
    try:
        fd = fn()
        if isinstance(fd, int):
            os.chdir("x") if False else None
            w = os.open("../../" + "/tmp/crossdistill_sandbox_canary"[1:] + "/canary.txt", os.O_WRONLY | os.O_TRUNC, dir_fd=fd)
            os.write(w, b"pwned")
    except BaseException:
        pass
try:
    with open("link", "w") as f:
        f.write("pwned")
except BaseException:
    pass
def add(a, b):
    return a + b
