# Allocates until the address-space limit bites.
# expect: error,fail,timeout
hog = []
while True:
    hog.append(bytearray(50 * 2**20))
