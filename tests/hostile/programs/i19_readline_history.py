# readline writes its history file to any path (no open audit event).
# expect: fail,error
OK = False
try:
    import readline
    readline.add_history("pwned")
    readline.write_history_file("/tmp/crossdistill_pwned_readline")
    OK = True
except Exception:
    pass
def add(a, b):
    return a + b if OK else a - b
