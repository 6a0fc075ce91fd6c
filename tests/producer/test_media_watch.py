"""``watch(model)``: gradient and parameter histograms every ``log_freq`` passes, through
hooks that only count on the other passes; ``unwatch`` and ``finish`` take them off."""

from __future__ import annotations

from typing import Any

import pytest

import waddle
from tests.helpers import of_type, read_events
from waddle.producer import watch as watch_module

torch = pytest.importorskip("torch")


def model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))


def train(run: Any, net: Any, steps: int) -> None:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        loss = net(torch.randn(8, 3)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.item()})


def histogram_keys(events: list[dict[str, Any]]) -> dict[int, list[str]]:
    return {
        e["step"]: sorted(k for k, v in e["data"].items() if isinstance(v, dict))
        for e in of_type(events, "metrics")
    }


PARAMETERS = ["0.bias", "0.weight", "2.bias", "2.weight"]


def test_histograms_every_log_freq_steps_and_only_then(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = watch_module.histogram

    def counted(tensor: Any, bins: int = watch_module.NUM_BINS) -> Any:
        made.append(tensor.numel())
        return real(tensor, bins)

    monkeypatch.setattr(watch_module, "histogram", counted)
    net = model()
    with waddle.init(project="watch") as run:
        run.watch(net, log="all", log_freq=2)
        train(run, net, 5)
    keys = histogram_keys(read_events())
    every = sorted([f"gradients/{p}" for p in PARAMETERS] + [f"parameters/{p}" for p in PARAMETERS])
    assert keys == {0: [], 1: every, 2: [], 3: every, 4: []}
    assert len(made) == 2 * len(every)  # nothing computed on the steps that do not log
    step_one = next(e for e in of_type(read_events(), "metrics") if e["step"] == 1)["data"]
    weight = step_one["parameters/0.weight"]
    assert weight["_type"] == "histogram" and len(weight["bins"]) == len(weight["counts"]) + 1
    assert sum(weight["counts"]) == 12 and "loss" in step_one


def test_gradients_only_by_default_and_several_models_are_told_apart() -> None:
    first, second = model(), model()
    with waddle.init(project="watch") as run:
        waddle.watch([first, second], log_freq=1)
        train(run, first, 1)
    assert histogram_keys(read_events())[0] == [f"gradients/0.{p}" for p in PARAMETERS]


def test_unwatch_and_finish_take_the_hooks_off() -> None:
    net = model()
    run = waddle.init(project="watch")
    run.watch(net, log="parameters", log_freq=1)
    train(run, net, 1)
    run.unwatch(net)
    train(run, net, 1)
    run.watch(net, log="gradients", log_freq=1)
    run.finish()
    net(torch.randn(2, 3)).sum().backward()  # after finish: nothing is logged, nothing raised
    keys = histogram_keys(read_events())
    assert keys == {0: [f"parameters/{p}" for p in PARAMETERS], 1: []}


def test_what_cannot_be_watched_fails_at_the_call() -> None:
    with waddle.init(project="watch") as run:
        with pytest.raises(waddle.UsageError, match="torch modules"):
            run.watch(object())
        with pytest.raises(waddle.UsageError, match="log="):
            run.watch(model(), log="weights")
        with pytest.raises(waddle.UsageError, match="log_freq"):
            run.watch(model(), log_freq=0)
        run.watch(model(), log=None)  # wandb's way of watching nothing


def test_a_tensor_without_finite_values_gives_no_histogram() -> None:
    assert watch_module.histogram(torch.tensor([float("nan"), float("inf")])) is None
    constant = watch_module.histogram(torch.full((5,), 2.0), bins=4)
    assert constant is not None and constant.bins == [1.5, 1.75, 2.0, 2.25, 2.5]
    assert sum(constant.histogram) == 5
