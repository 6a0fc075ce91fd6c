"""``wandb.sdk.lib.config_util``: ``ConfigError``, what a refused config change raises."""

from waddle.compat.surface import ConfigError

__all__ = ["ConfigError"]
