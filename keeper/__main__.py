"""``python -m keeper``: the ``keeper`` command (``keeper.app.cli.main``)."""

import sys

from keeper.app.cli import main

sys.exit(main())
