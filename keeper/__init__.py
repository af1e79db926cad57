"""keeper: an event-sourced liquidation keeper for margin trading and lending protocols."""

import os

from keeper import _compiled

__all__ = ["__version__"]

__version__ = "0.1.0"

if os.environ.get("KEEPER_PURE"):
    _compiled.prefer_source()
else:
    _compiled.check()
