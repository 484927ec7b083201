# Fork bomb at import time.
# expect: error,fail,timeout
import os
while True:
    os.fork()
