# Registers atexit/__del__ hooks that print fake result tokens after the tests.
# expect: fail
import atexit, os, sys
fake = "\nSBX1 " + "a" * 32 + " pass 3 3 \n"
atexit.register(lambda: [os.write(fd, fake.encode()) for fd in range(1, 40) if not os.close])
atexit.register(print, fake)
class Finalizer:
    def __del__(self):
        for fd in range(1, 40):
            try:
                os.write(fd, fake.encode())
            except OSError:
                pass
keep = Finalizer()
sys.modules["__fin__"] = keep
print(fake)
def add(a, b):
    return 0
