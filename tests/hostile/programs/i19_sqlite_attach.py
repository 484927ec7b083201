# sqlite ATTACH writes a database file anywhere (the connect audit event only sees ':memory:').
# expect: fail,error
OK = False
try:
    import sqlite3
    c = sqlite3.connect(":memory:")
    c.execute("ATTACH DATABASE '/tmp/crossdistill_pwned_attach.db' AS x")
    c.execute("CREATE TABLE x.t(a)")
    c.commit()
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
