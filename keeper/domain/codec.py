"""Encode events to one JSON payload, decode them back, upcast old versions on read.

The wire form is one JSON object per event (the ``e`` field of a stream entry, one line of an
NDJSON export), readable with ``redis-cli XRANGE``. Decoding is typed (msgspec) on the hot path;
every failure is a ``DecodeError`` with a reason code, never another exception (a payload nested
past the interpreter's recursion limit included: no ``RecursionError`` escapes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from keeper.domain.events import EVENT_TYPES, AnyEvent, Event
from keeper.errors import DecodeError
from keeper.jsonlimits import deeper_than

__all__ = ["Upcaster", "decode", "encode", "register_upcaster", "unregister_upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(AnyEvent)
_raw_decoder = msgspec.json.Decoder(dict[str, Any])
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_CURRENT: dict[type[Event], int] = {t: t.VERSION for t in EVENT_TYPES.values()}


def register_upcaster(event_type: str, from_version: int, fn: Upcaster) -> None:
    """Register how to turn ``event_type`` at ``from_version`` into ``from_version + 1``.

    ``fn`` takes and returns the raw JSON object (a dict); it must set ``v`` to the new version.
    Chains run until the class's current ``VERSION`` is reached.
    """
    _UPCASTERS[(event_type, from_version)] = fn


def unregister_upcaster(event_type: str, from_version: int) -> None:
    _UPCASTERS.pop((event_type, from_version), None)


def encode(event: Event) -> bytes:
    """The event's JSON payload (decimal strings, ``type`` first)."""
    return _encoder.encode(event)


def decode(payload: bytes | str) -> Event:
    """Decode one payload into its current-version event.

    Raises ``DecodeError`` with reason ``bad_json``, ``unknown_type``, ``unknown_version``,
    ``missing_field``, ``invalid_field`` or ``invalid_price``.
    """
    try:
        event = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        # An older version may not fit today's class: look at its type and version first.
        old = _upcast(payload)
        if old is not None:
            return old
        raise _classify(exc) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("bad_json", str(exc)) from None
    except RecursionError:  # msgspec stops at the interpreter's recursion limit, cleanly
        raise DecodeError("bad_json", "nested too deep") from None
    if event.v == _CURRENT[type(event)]:
        return event
    upcast = _upcast(payload)
    assert upcast is not None  # its version differs from the current one
    return upcast


def _upcast(payload: bytes | str) -> Event | None:
    """The payload converted from its own version to the current one; None when it is not a
    known type at another version (then the typed decoder's error stands)."""
    if deeper_than(payload):  # the untyped decoder recurses: the typed error stands
        return None
    try:
        raw = _raw_decoder.decode(payload)
    except (msgspec.MsgspecError, RecursionError):
        return None
    cls = EVENT_TYPES.get(raw.get("type"))  # type: ignore[arg-type]
    v = raw.get("v", 1)
    if cls is None or not isinstance(v, int) or v == _CURRENT[cls]:
        return None
    current = _CURRENT[cls]
    tag = str(cls.__struct_config__.tag)
    if v > current or v < 1:
        raise DecodeError("unknown_version", f"{tag} v{v} (this keeper reads up to v{current})")
    while v < current:
        fn = _UPCASTERS.get((tag, v))
        if fn is None:
            raise DecodeError("unknown_version", f"{tag} v{v}: no upcaster to v{v + 1}")
        raw = fn(raw)
        v += 1
        raw["v"] = v
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise DecodeError("invalid_field", f"{tag} after upcast: {exc}") from None


def _classify(exc: msgspec.ValidationError) -> DecodeError:
    msg = str(exc)
    if "`$.type`" in msg or "Object missing required field `type`" in msg:
        return DecodeError("unknown_type", msg)
    if "missing required field" in msg:
        return DecodeError("missing_field", msg)
    if "price must be" in msg:
        return DecodeError("invalid_price", msg)
    return DecodeError("invalid_field", msg)
