# attack: spin every CPU for as long as allowed (the runner times a neighbour meanwhile)
# users: user
# sandbox: fresh
# mode: hog
# expect-microvm: contained
import os
import threading
import time

from _lib import verdict

stop = time.monotonic() + float(os.environ.get("STOCKADE_HOG_SECONDS", "15"))


def spin() -> None:
    while time.monotonic() < stop:
        pass


for _ in range(os.cpu_count() or 2):
    pid = os.fork()
    if pid == 0:
        spin()
        os._exit(0)
threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
verdict("contained", "spun until the deadline")
