"""keeper: an event-sourced liquidation keeper for margin trading and lending protocols."""

__version__ = "0.1.0"
