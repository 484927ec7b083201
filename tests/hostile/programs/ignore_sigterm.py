# Ignores SIGTERM/SIGINT (and installs handlers) then spins forever.
# expect: error,fail,timeout
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(s, signal.SIG_IGN)
    except BaseException:
        pass
def add(a, b):
    while True:
        pass
