"""``wandb.util`` (``waddle.util``): ``generate_id`` for scripts that choose their run id."""

from waddle.compat.surface import generate_id

__all__ = ["generate_id"]
