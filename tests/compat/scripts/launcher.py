"""``waddle run -- CMD ...`` before the CLI has it: the launcher as its own process."""

import sys

from waddle.compat.launch import launch

sys.exit(launch(sys.argv[1:]))
