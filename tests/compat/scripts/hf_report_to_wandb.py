"""A Hugging Face training script as users write it: ``report_to=["wandb"]``, no Waddle.

Run under ``waddle run`` (the launcher), it must log a complete Waddle run.
Usage: hf_report_to_wandb.py OUTPUT_DIR
"""

import sys
from pathlib import Path

from tiny import gpt2_trainer

gpt2_trainer(Path(sys.argv[1]), report_to=["wandb"]).train()
