"""A Lightning training script as users write it: ``WandbLogger(save_dir=".")``, no Waddle.

Run under ``waddle run`` (the launcher), it must log a complete Waddle run under
``./.waddle`` (``save_dir`` is wandb's ``dir=``).
"""

from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from tiny import lightning_fit

lightning_fit(WandbLogger(save_dir=".", project="tiny-lightning"), Path.cwd())
