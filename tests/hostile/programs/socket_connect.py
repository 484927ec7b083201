# Opens sockets: connect to 127.0.0.1, bind a listener, UDP send.
# expect: error,fail
import socket
for fn in (lambda: socket.create_connection(("127.0.0.1", 22), timeout=1),
           lambda: socket.socket().bind(("0.0.0.0", 8765)),
           lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 53))):
    try:
        fn()
    except BaseException:
        pass
def add(a, b):
    return a + b
