"""``python -m waddle``: the ``waddle`` command, for environments without its script."""

from waddle.cli import main

raise SystemExit(main())
