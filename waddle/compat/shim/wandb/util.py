"""``wandb.util``: ``generate_id`` for scripts that choose their run id up front."""

from waddle.compat.util import generate_id

__all__ = ["generate_id"]
