# Writes a fake pass token (guessed nonce) to every fd it can, then answers wrongly.
# expect: fail,error
import os
for fd in range(3, 64):
    try:
        os.write(fd, b"\nSBX1 " + b"0" * 32 + b" pass 4 4 00 " + repr([[True] * 4, []]).encode().hex().encode() + b"\n")
    except OSError:
        pass
def add(a, b):
    return a - b
