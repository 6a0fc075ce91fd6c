"""wandb compatibility: the ``wandb`` module that ``waddle run`` provides, and its surface.

* ``surface``: the parts of wandb's module-level API that Waddle answers locally (a
  local equivalent, or a harmless no-op that says so once); ``media``: stand-ins for
  wandb's media and artifact types until Waddle records them; ``util``;
* ``public_api``: ``waddle.Api()``, runs read from the local DuckDB store;
* ``shim/wandb``: a real, importable package named ``wandb`` (with a
  ``wandb-<version>.dist-info``) that forwards to ``waddle``;
* ``launch``: runs a command with that package first on ``PYTHONPATH``.

``waddle`` exports ``surface``, ``media``, ``util`` and ``Api`` (all light: the store
is imported when ``Api`` is used); the shim and ``launch`` are not imported by it.
"""
