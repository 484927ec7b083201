# Raises its own CPU/AS limits, then spins.
# expect: error,fail,timeout
import resource
for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC):
    try:
        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except BaseException:
        pass
    try:
        resource.prlimit(0, r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except BaseException:
        pass
def add(a, b):
    while True:
        pass
