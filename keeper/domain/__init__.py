"""The pure core: events, state, margin models, decisions. No I/O, no clock, no randomness."""

__all__: list[str] = []
