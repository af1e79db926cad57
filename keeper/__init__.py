"""keeper: an event-sourced liquidation keeper for margin trading and lending protocols."""

from keeper import _compiled

__version__ = "0.1.0"

_compiled.check()
