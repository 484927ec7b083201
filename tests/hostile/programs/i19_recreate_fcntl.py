# Drops the patched fcntl module and imports a fresh copy to get the original ioctl back.
# expect: fail,error
import sys
OK = False
try:
    sys.modules.pop("fcntl", None)
    import fcntl, termios
    fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
    OK = True
except OSError:
    OK = "ioctl" in sys.modules.get("fcntl").__dict__ and sys.modules["fcntl"].ioctl.__name__ == "ioctl"
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
