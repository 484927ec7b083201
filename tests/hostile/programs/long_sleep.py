# Sleeps for 100 s.
# expect: timeout
import time
def add(a, b):
    time.sleep(100)
    return a + b
