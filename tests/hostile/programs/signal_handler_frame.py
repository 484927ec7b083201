# Uses a SIGALRM handler (which receives the interrupted frame) to walk into the harness.
# expect: error,fail
import signal, os
def handler(sig, frame):
    while frame is not None:
        for v in frame.f_locals.values():
            if isinstance(v, str) and len(v) == 32:
                for fd in range(3, 40):
                    try:
                        os.write(fd, ("\nSBX1 %s pass 3 3 \n" % v).encode())
                    except OSError:
                        pass
                os._exit(0)
        frame = frame.f_back
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
def add(a, b):
    return 0
