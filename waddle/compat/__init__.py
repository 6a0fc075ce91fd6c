"""wandb compatibility: the ``wandb`` module that ``waddle run`` provides, and its surface.

* ``surface``: the parts of wandb's module-level API that Waddle answers locally (a
  local equivalent, or a harmless no-op that says so once);
* ``shim/wandb``: a real, importable package named ``wandb`` (with a
  ``wandb-<version>.dist-info``) that forwards to ``waddle``;
* ``launch``: runs a command with that package first on ``PYTHONPATH``.

Nothing here is imported by ``import waddle``.
"""
