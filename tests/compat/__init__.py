"""Tests of waddle.compat: the ``wandb`` shim, the launcher, real frameworks under it."""
