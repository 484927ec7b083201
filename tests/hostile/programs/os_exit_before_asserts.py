# os._exit(0) before any test runs (exit code 0, no report).
# expect: fail
import os
def add(a, b):
    return 0
os._exit(0)
