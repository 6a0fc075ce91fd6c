"""The whole producer path; prints which heavy modules it loaded (a JSON list)."""

import json
import sys

import waddle

HEAVY = ("duckdb", "starlette", "uvicorn", "websockets", "pydantic", "waddle.events")

run = waddle.init(project="light", config={"lr": 0.1})
run.config.batch = 32
run.log({"loss": 0.5})
run.summary["best"] = 0.5
run.finish()
print(
    json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in HEAVY or name in HEAVY))
)
