"""A training script that ends in a chosen way: python lifecycle.py <ending>.

finish     calls run.finish()
no-finish  returns without finish (atexit must finish the run)
raise      dies of an uncaught RuntimeError
interrupt  dies of an uncaught KeyboardInterrupt
hang       prints "ready" and sleeps until killed

The run id comes from $WADDLE_RUN_ID (or is random); the folder from $WADDLE_DIR.
"""

import sys
import time

import waddle

ending = sys.argv[1]
run = waddle.init(project="lifecycle", config={"lr": 0.1, "layers": 3}, system_metrics=False)
for step in range(5):
    run.log({"loss": 1.0 / (step + 1)})
run.summary["best"] = 0.2
if ending == "finish":
    run.finish()
elif ending == "raise":
    raise RuntimeError("boom")
elif ending == "interrupt":
    raise KeyboardInterrupt
elif ending == "hang":
    print("ready", flush=True)
    time.sleep(60)
print("done", flush=True)
