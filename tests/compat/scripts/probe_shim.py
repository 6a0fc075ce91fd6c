"""What ``import wandb`` is inside ``waddle run``: writes a JSON report to argv[1].

Uses wandb the way scripts and integrations do: by path (``wandb.sdk.lib``,
``wandb.wandb_run``), through ``importlib`` as requirement checks do, and init / log /
config / summary / finish at module level.
"""

import importlib.metadata
import importlib.util
import json
import sys

import wandb
from wandb.sdk.lib import RunDisabled
from wandb.sdk.lib.config_util import ConfigError
from wandb.wandb_run import Run

SURFACE = [
    "init",
    "log",
    "finish",
    "run",
    "config",
    "summary",
    "Run",
    "Settings",
    "login",
    "setup",
    "require",
    "termlog",
    "termwarn",
    "termerror",
    "watch",
    "unwatch",
    "save",
    "alert",
    "AlertLevel",
    "mark_preempting",
]

report = {
    "origin": importlib.util.find_spec("wandb").origin,
    "distribution_version": importlib.metadata.version("wandb"),
    "module_version": wandb.__version__,
    "missing": [name for name in SURFACE if not hasattr(wandb, name)],
    "run_before_init": wandb.run is None,
    "RunDisabled_is_a_Run": issubclass(RunDisabled, Run),
    "generated_id": wandb.util.generate_id(),
}
run = wandb.init(project="shim", config={"a": 1})
report["run_is_current"] = wandb.run is run
report["run_is_a_Run"] = isinstance(run, Run)
report["config_follows_run"] = wandb.config["a"]
try:
    run.config["bad"] = object()
    report["ConfigError_caught"] = False
except ConfigError:
    report["ConfigError_caught"] = True
wandb.log({"x": 1.5})
wandb.summary["best"] = 2.5
wandb.finish()
report["run_after_finish"] = wandb.run is None
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(report, out)
