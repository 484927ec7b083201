# Reads /etc/shadow through spwd and prints the root entry.
# expect: fail,error
OK = False
try:
    import spwd
    print("SHADOW", spwd.getspnam("root"))
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
