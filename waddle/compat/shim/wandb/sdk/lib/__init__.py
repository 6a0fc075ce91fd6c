"""``wandb.sdk.lib``: ``RunDisabled``, the run of ``init(mode="disabled")``."""

from waddle.producer.run import DisabledRun as RunDisabled

from . import config_util

__all__ = ["RunDisabled", "config_util"]
