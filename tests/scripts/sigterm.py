"""A process that receives SIGTERM: python sigterm.py <case>.

Prints "ready" once the run is live; the parent then sends SIGTERM.

default       Python's default disposition; sleeps
handler       installs a handler (prints, exits 3) before init; sleeps
ignore        ignores SIGTERM before init; finishes after a line on stdin
loop          logs in a tight loop on the main thread
disabled      mode="disabled"; sleeps
thread-first  the process's first init runs in a worker thread; then init in main; sleeps
in-finish     SIGTERM arrives while run.finish() encodes the summary
"""

import os
import signal
import sys
import threading
import time

import waddle

case = sys.argv[1]


def handler(signum, frame):
    print("handler ran", flush=True)
    sys.exit(3)


class Preempted:
    """A 0-d "tensor" whose .item() delivers SIGTERM once armed (a preemption mid-call)."""

    armed = False
    ndim = 0

    def item(self):
        if Preempted.armed:
            os.kill(os.getpid(), signal.SIGTERM)
        return 1.0


if case == "handler":
    signal.signal(signal.SIGTERM, handler)
elif case == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif case == "thread-first":
    worker = threading.Thread(
        target=lambda: waddle.init(id="worker", system_metrics=False).finish()
    )
    worker.start()
    worker.join()

mode = "disabled" if case == "disabled" else None
run = waddle.init(project="sigterm", mode=mode, system_metrics=False)
run.log({"x": -1})
if case == "in-finish":
    run.log({"tensor": Preempted()})
    Preempted.armed = True
    run.finish()
    print("finish returned", flush=True)
    sys.exit(0)
print("ready", flush=True)
if case == "loop":
    i = 0
    while True:
        run.log({"x": i})
        i += 1
elif case == "ignore":
    sys.stdin.readline()
    print("still ignored:", signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, flush=True)
    run.finish()
else:
    time.sleep(60)
