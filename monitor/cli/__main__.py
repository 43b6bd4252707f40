"""``python -m monitor.cli``: the same as the ``hallmon`` console script."""

import sys

from monitor.cli import main

sys.exit(main())
