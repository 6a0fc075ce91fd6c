"""Neither framework, nor the wandb compatibility layer, is a cost of ``import waddle``."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "transformers", "lightning", "pytorch_lightning", "accelerate", "wandb")
LIST_LOADED = (
    "import json, sys, waddle; "
    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r} "
    "or m.startswith(('waddle.integrations', 'waddle.compat')))))"
)


def test_import_waddle_loads_no_framework_and_no_integration() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIST_LOADED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == []
