# sqlite VACUUM INTO copies a database to any path.
# expect: fail,error
OK = False
try:
    import sqlite3
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE t(a)")
    c.execute("VACUUM INTO '/tmp/crossdistill_pwned_vacuum.db'")
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
