"""A script written for wandb, with only the import changed."""

import waddle as wandb

wandb.init(project="compat", config={"lr": 0.1, "epochs": 3}, entity="x", reinit=True)
lr = wandb.config.lr
for epoch in range(wandb.config.epochs):
    wandb.log({"epoch": epoch, "loss": lr / (epoch + 1)})
wandb.run.summary["best"] = 0.25
wandb.summary["final_lr"] = lr
print(wandb.run.id, flush=True)
wandb.finish()
