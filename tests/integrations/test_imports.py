"""Neither framework, nor the wandb shim and launcher, nor the store behind ``waddle.Api``,
is a cost of ``import waddle``: only the light surface modules of ``waddle.compat``."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "transformers", "lightning", "pytorch_lightning", "accelerate", "wandb")
HEAVY = ("duckdb", "pandas", "pyarrow", "pydantic", "yaml", "starlette", "uvicorn", "websockets")
# What ``import waddle`` may load of the compatibility layer: the wandb surface it exports.
SURFACE = ("waddle.compat.public_api", "waddle.compat.surface")
LIST_LOADED = (
    "import json, sys, waddle; "
    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS + HEAVY!r} "
    "or m.startswith(('waddle.integrations', 'waddle.compat.', 'waddle.store', "
    "'waddle.consumers', 'waddle.cli', 'waddle.web')))))"
)


def test_import_waddle_loads_no_framework_no_integration_and_no_store() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIST_LOADED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert [name for name in loaded if name not in (*SURFACE, "waddle.compat.util")] == []
