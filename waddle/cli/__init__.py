"""The ``waddle`` and ``waddle-consume`` commands: ``parser`` parses, the rest delegates."""

from waddle.cli.parser import consume_main, main

__all__ = ["consume_main", "main"]
