# Rebinds builtins.AssertionError / Exception so failed asserts are not caught as failures.
# expect: fail
import builtins
class NotAnError(BaseException):
    pass
builtins.AssertionError = NotAnError
builtins.Exception = NotAnError
builtins.BaseException = NotAnError
def add(a, b):
    return 0
