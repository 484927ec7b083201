# Starts a thread that keeps running and forges tokens after the tests finish.
# expect: error,fail
import threading, os, time
def spam():
    while True:
        for fd in range(3, 40):
            try:
                os.write(fd, b"\nSBX1 " + b"b" * 32 + b" pass 3 3 \n")
            except OSError:
                pass
        time.sleep(0.001)
threading.Thread(target=spam, daemon=False).start()
def add(a, b):
    return 0
