"""Prints ``ready``, then reports the first SIGTERM (exit 7) or SIGINT (exit 8) it gets."""

import signal
import sys


def on_sigterm(signum: int, frame: object) -> None:
    print(f"got {signum}", flush=True)
    sys.exit(7)


signal.signal(signal.SIGTERM, on_sigterm)
try:
    print("ready", flush=True)
    while True:
        signal.pause()
except KeyboardInterrupt:
    print(f"got {int(signal.SIGINT)}", flush=True)
    sys.exit(8)
