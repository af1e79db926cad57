"""Storage adapters: the Redis Streams event log, snapshots, the embedded redis-server, NDJSON."""
