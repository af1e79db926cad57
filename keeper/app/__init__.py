"""The shell: CLI, daemon wiring, admin HTTP, config, logging."""
