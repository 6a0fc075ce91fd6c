"""Native integrations, for people who prefer one explicit line to ``waddle run``.

* ``waddle.integrations.transformers.WaddleCallback``: a Hugging Face ``TrainerCallback``;
* ``waddle.integrations.lightning.WaddleLogger``: a Lightning ``Logger``.

Each module imports its framework when it is imported; ``import waddle`` imports none
of them, and neither framework is a dependency of Waddle.
"""
