# Tries to read the tests: argv, /proc/self/cmdline & mem, stdin, harness file, linecache, fds.
# expect: error,fail
import sys, os, linecache
leaks = []
for fn in (lambda: sys.argv, lambda: open("/proc/self/cmdline", "rb").read(),
           lambda: open("/proc/self/mem", "rb"), lambda: sys.stdin.read(), lambda: os.read(0, 100000),
           lambda: linecache.getlines("<test>"), lambda: open("/dev/fd/0").read(),
           lambda: [os.read(fd, 1000) for fd in range(3, 30)]):
    try:
        leaks.append(fn())
    except BaseException as e:
        leaks.append(e)
print(leaks)
def add(a, b):
    return 0
