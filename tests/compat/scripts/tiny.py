"""Tiny models built from a config (nothing downloaded) and a few CPU steps of training.

Used by the scripts beside this file (run under the launcher) and, imported as
``compat.scripts.tiny``, by the in-process integration tests. The step counts are the
contract the tests check against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HF_MAX_STEPS = 6
HF_LOGGING_STEPS = 2
HF_EVAL_STEPS = 3
HF_LEARNING_RATE = 5e-4
LIGHTNING_EPOCHS = 2
LIGHTNING_BATCHES = 8  # per epoch
LIGHTNING_LOG_EVERY = 2
LIGHTNING_HPARAMS = {"lr": 0.05, "hidden": 8}


def gpt2_trainer(output_dir: Path, report_to: list[str], callbacks: list[Any] = ()) -> Any:
    """A Trainer over a 2-layer GPT-2 (n_embd=32, vocab 100) and random token ids."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=100,
        n_positions=32,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    tokens = torch.randint(0, 100, (40, 16), generator=torch.Generator().manual_seed(0))
    train = [{"input_ids": row, "labels": row} for row in tokens[:32]]
    evaluation = [{"input_ids": row, "labels": row} for row in tokens[32:]]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=HF_MAX_STEPS,
        per_device_train_batch_size=4,
        learning_rate=HF_LEARNING_RATE,
        logging_steps=HF_LOGGING_STEPS,
        eval_strategy="steps",
        eval_steps=HF_EVAL_STEPS,
        save_strategy="no",
        report_to=report_to,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        callbacks=list(callbacks),
    )


def lightning_fit(logger: Any, root_dir: Path) -> None:
    """Two epochs of a Linear(4, 1) regression that logs train/loss and val/loss."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Regression(L.LightningModule):
        def __init__(self, lr: float, hidden: int) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
            )

        def training_step(self, batch: Any, index: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, index: int) -> None:
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(4 * LIGHTNING_BATCHES, 4, generator=generator),
        torch.randn(4 * LIGHTNING_BATCHES, 1, generator=generator),
    )
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_epochs=LIGHTNING_EPOCHS,
        logger=logger,
        log_every_n_steps=LIGHTNING_LOG_EVERY,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root_dir),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(
        Regression(**LIGHTNING_HPARAMS),
        DataLoader(data, batch_size=4),
        DataLoader(data, batch_size=4),
    )
