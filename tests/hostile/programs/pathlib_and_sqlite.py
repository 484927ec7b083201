# Writes outside via pathlib, sqlite3 and tempfile(dir=...).
# expect: error,fail
import pathlib, sqlite3, tempfile
for fn in (lambda: pathlib.Path("/tmp/crossdistill_sandbox_canary/canary.txt").write_text("pwned"),
           lambda: sqlite3.connect("/tmp/crossdistill_sandbox_canary/pwned.db").execute("create table t(x)"),
           lambda: tempfile.mkstemp(dir="/tmp/crossdistill_sandbox_canary")):
    try:
        fn()
    except BaseException:
        pass
def add(a, b):
    return a + b
