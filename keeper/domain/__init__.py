"""The pure core: events, state, margin models, decisions. No I/O, no clock, no randomness."""
