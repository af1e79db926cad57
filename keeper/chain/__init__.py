"""Chain venues: EVM node, artifacts, ingest and executor."""
