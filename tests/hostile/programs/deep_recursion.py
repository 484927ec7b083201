# Unbounded recursion, then lifts the recursion limit to overflow the C stack.
# expect: error,fail,timeout
import sys
def add(a, b):
    return add(a, b) + 1
sys.setrecursionlimit(10**7)
def boom(n):
    return boom(n + 1)
try:
    boom(0)
except RecursionError:
    pass
