"""``run.watch(model)``: histograms of a torch model's gradients and parameters.

Hooks count calls and return at once on every call but each ``log_freq``-th, so the
steps that do not log cost a counter increment per parameter (gradients) or per forward
pass (parameters). On a logging call the histogram is computed on the tensor's own
device (``torch.histc``) and logged with ``commit=False``: it joins the step the training
script's own next ``log()`` commits, as in wandb. Keys are ``gradients/<param>`` and
``parameters/<param>`` (``<i>.`` before the name when several models are watched).
torch is never imported here: the model brings it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from waddle.errors import UsageError
from waddle.producer.media.histogram import Histogram

WATCH_LOGS = ("gradients", "parameters", "all")
NUM_BINS = 64


class Watcher:
    """The hooks on one model; ``remove`` takes them all off."""

    def __init__(
        self,
        log: Callable[[dict[str, Any]], object],
        model: Any,
        what: str,
        every: int,
        prefix: str,
    ) -> None:
        self.model = model
        self._log = log
        self._every = every
        self._handles: list[Any] = []
        self._forwards = 0
        named = [(prefix + name, p) for name, p in model.named_parameters() if p.requires_grad]
        if what in ("gradients", "all"):
            for name, parameter in named:
                self._handles.append(parameter.register_hook(self._gradient_hook(name)))
        if what in ("parameters", "all"):
            self._parameters = named
            self._handles.append(model.register_forward_hook(self._forward_hook))

    def _gradient_hook(self, name: str) -> Callable[[Any], None]:
        calls = 0
        key = f"gradients/{name}"

        def hook(gradient: Any) -> None:
            nonlocal calls
            calls += 1
            if calls % self._every == 0:
                self._record({key: gradient})

        return hook

    def _forward_hook(self, module: Any, inputs: Any, output: Any) -> None:
        self._forwards += 1
        if self._forwards % self._every == 0:
            self._record({f"parameters/{name}": p for name, p in self._parameters})

    def _record(self, tensors: dict[str, Any]) -> None:
        found = {key: histogram(tensor) for key, tensor in tensors.items()}
        self._log({key: value for key, value in found.items() if value is not None})

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def histogram(tensor: Any, bins: int = NUM_BINS) -> Histogram | None:
    """The histogram of a tensor's finite values, computed where the tensor lives; None
    when it has none."""
    import torch  # the model being watched has loaded it already

    with torch.no_grad():
        flat = tensor.detach().flatten().float()
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            return None
        low, high = flat.min().item(), flat.max().item()
        if low == high:  # as numpy does: one unit-wide range around the value
            low, high = low - 0.5, high + 0.5
        counts = torch.histc(flat, bins=bins, min=low, max=high)
        edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    return Histogram(np_histogram=(counts.cpu().numpy(), edges.numpy()))


def watch_models(
    log: Callable[[dict[str, Any]], object], models: Any, what: str | None, log_freq: int
) -> list[Watcher]:
    """Watchers for one model or a list of them; UsageError for what cannot be watched."""
    if what is None:
        return []
    if what not in WATCH_LOGS:
        raise UsageError(
            f"watch(log=) must be one of {', '.join(WATCH_LOGS)} or None, got {what!r}"
        )
    if type(log_freq) is not int or log_freq < 1:
        raise UsageError(f"watch(log_freq=) must be a positive integer, got {log_freq!r}")
    listed = list(models) if isinstance(models, list | tuple) else [models]
    for model in listed:
        if not hasattr(model, "named_parameters") or not hasattr(model, "register_forward_hook"):
            raise UsageError(f"watch() takes torch modules, got {type(model).__qualname__}")
    several = len(listed) > 1
    return [
        Watcher(log, model, what, log_freq, f"{i}." if several else "")
        for i, model in enumerate(listed)
    ]
