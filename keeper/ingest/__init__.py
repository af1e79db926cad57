"""Venue account-event sources: the reference venue's websocket stream and NDJSON files."""

from keeper.ingest.account_ws import VENUE_EVENTS, AccountStream
from keeper.ingest.ndjson_source import load_ndjson, read_ndjson

__all__ = ["VENUE_EVENTS", "AccountStream", "load_ndjson", "read_ndjson"]
