"""The README quickstart, run verbatim as a script; its log checked against schemas/."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import (
    TESTS,
    assert_gapless,
    assert_valid_by_schemas,
    child_env,
    ending,
    of_type,
    raw_log,
    read_events,
    run_script,
)

QUICKSTART = """\
import waddle
import random
run = waddle.init(project="hello-world")
config = run.config
config.learning_rate = 0.01
config.batch_size = 32
config.model_type = "simple_CNN"
for epoch in range(10):
    train_loss = random.uniform(0.8, 0.4)
    run.log({"epoch": epoch, "loss": train_loss})
    if epoch % 2 == 0:
        accuracy = random.uniform(0.6, 0.9)
        run.log({"epoch": epoch, "accuracy": accuracy})
run.finish()
"""


def test_the_readme_shows_this_quickstart() -> None:
    readme = (TESTS.parent / "README.md").read_text(encoding="utf-8")
    assert f"```python\n{QUICKSTART}```" in readme


def test_the_quickstart_runs_verbatim_and_its_log_matches_the_schemas(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(QUICKSTART, encoding="utf-8")
    done = run_script(script, cwd=tmp_path, env=child_env(drop=("WADDLE_DIR",)))
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    # the newcomer is told where the run is and how to see it (stderr: stdout stays the script's)
    assert f"see it with: waddle serve --dir {tmp_path / '.waddle'}\n" in done.stderr

    root = tmp_path / ".waddle"  # the default folder, in the script's working directory
    events = read_events(root)
    assert_gapless(events)
    assert (events[0]["type"], events[0]["project"], events[0]["config"]) == (
        "run",
        "hello-world",
        {},
    )
    assert [e["config"] for e in of_type(events, "config")] == [
        {"learning_rate": 0.01},
        {"batch_size": 32},
        {"model_type": "simple_CNN"},
    ]
    metrics = of_type(events, "metrics")
    assert [m["step"] for m in metrics] == list(range(15))
    assert [sorted(m["data"]) for m in metrics[:3]] == [
        ["epoch", "loss"],
        ["accuracy", "epoch"],
        ["epoch", "loss"],
    ]
    assert all(0.4 <= m["data"]["loss"] <= 0.8 for m in metrics if "loss" in m["data"])
    summary = events[-2]["summary"]
    assert summary["epoch"] == 9
    assert summary["loss"] == metrics[-1]["data"]["loss"]
    assert summary["accuracy"] == metrics[-2]["data"]["accuracy"]
    assert ending(events) == ("finished", None)
    assert events[0]["context"]["code"]["source"] == QUICKSTART

    assert assert_valid_by_schemas(raw_log(root)) == len(events)
