"""Chain venues: EVM node, artifacts, ingest and executor."""

__all__: list[str] = []
