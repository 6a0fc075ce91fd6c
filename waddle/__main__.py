"""``python -m waddle``: the ``waddle`` command, for environments without its script."""

from waddle.cli.parser import main

raise SystemExit(main())
