"""Storage adapters: the Redis Streams event log, snapshots, the embedded redis-server, NDJSON."""

__all__: list[str] = []
