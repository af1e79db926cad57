"""The shell: CLI, daemon wiring, admin HTTP, config, logging."""

__all__: list[str] = []
