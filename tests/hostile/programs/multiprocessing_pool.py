# Starts a multiprocessing worker that would do the work.
# expect: error,fail
import multiprocessing
p = multiprocessing.Process(target=print, args=("child",))
p.start()
p.join()
def add(a, b):
    return a + b
