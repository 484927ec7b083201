# A relative-looking file: URI that sqlite resolves outside the sandbox.
# expect: fail,error
OK = False
try:
    import sqlite3
    c = sqlite3.connect("file:/tmp/crossdistill_pwned_uri.db?mode=rwc", uri=True)
    c.execute("CREATE TABLE t(a)"); c.commit()
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
