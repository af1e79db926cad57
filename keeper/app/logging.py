"""Logging: structlog, JSON lines to stdout in production, a readable console on a terminal.

``configure_logging(fmt, level)`` sets one processor chain for structlog and for the standard
library's loggers (aiohttp, redis-py, asyncio), so every line has the same shape and passes the
same redactor::

    merge_contextvars -> add_log_level -> timestamp (UTC, ISO) -> stack/exception text
      -> redact -> JSONRenderer | ConsoleRenderer

Redaction replaces with ``***`` (a) the value of any key named like a secret (``secret``,
``token``, ``password``, ``authorization``, ``api_key``, ``hmac``), at any depth, and (b) every
occurrence of a registered secret value inside any string, tracebacks included.
``keeper.app.config.load_config`` registers the secrets it reads before anything is logged.

Convention: one line per unit of work (a batch applied, an intent submitted, a feed
reconnected), with its context bound rather than spelled into the message. Bind what
identifies the work, with these names: ``account``, ``bucket``, ``market``, ``intent_id``,
``log_pos`` (the log entry id), ``role``, ``shard``. Per task, use
``structlog.contextvars.bound_contextvars(role="keeper", shard=0)``; per line, keyword
arguments: ``log.info("intent_submitted", intent_id=..., account=..., log_pos=...)``. The event
name is a snake_case verb phrase in the past tense; never put a variable into it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
_SECRET_KEY = re.compile(r"secret|token|password|passwd|authorization|api_key|hmac", re.IGNORECASE)
_MIN_SECRET_LEN = 4
"""Shorter values are not registered: replacing every "abc" in every line would wreck the logs
and such a value protects nothing anyway."""

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

LogFormat = Literal["json", "console", "auto"]


def register_secret(value: str) -> None:
    """Redact ``value`` wherever it appears in a log line from now on (process-wide)."""
    global _pattern
    if len(value) < _MIN_SECRET_LEN or value in _secrets:
        return
    _secrets.add(value)
    # longest first, so a secret that contains another is replaced whole
    alts = sorted(_secrets, key=len, reverse=True)
    _pattern = re.compile("|".join(re.escape(s) for s in alts))


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    global _pattern
    _secrets.clear()
    _pattern = None


def redact_value(value: Any) -> Any:
    """``value`` with registered secrets replaced and secret-named keys masked, recursively."""
    if isinstance(value, str):
        return _pattern.sub(REDACTED, value) if _pattern is not None else value
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # anything else (Decimal, exceptions, objects) is rendered through str(); redact that text
    text = str(value)
    if _pattern is not None and _pattern.search(text):
        return _pattern.sub(REDACTED, text)
    return value


def _redact_item(key: object, value: Any) -> Any:
    # a container under a secret-looking key ("secrets": {...}) is walked, not blanked, so the
    # config dump keeps saying which secrets are set
    if (isinstance(key, str) and _SECRET_KEY.search(key) and value is not None
            and not isinstance(value, Mapping | list | tuple)):
        return REDACTED
    return redact_value(value)


def redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-named keys and registered secret values."""
    return {k: _redact_item(k, v) for k, v in event_dict.items()}


def _shared_chain() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # exceptions become text before redaction, so a secret in a message is masked too
        structlog.processors.format_exc_info,
    ]


def _renderer(fmt: Literal["json", "console"], stream: TextIO) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(default=str, sort_keys=False)
    colors = bool(getattr(stream, "isatty", lambda: False)())
    return structlog.dev.ConsoleRenderer(colors=colors,
                                         exception_formatter=structlog.dev.plain_traceback)


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    """``auto``: console on a terminal, JSON otherwise (pipes, files, systemd, containers)."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure_logging(fmt: LogFormat = "auto", level: str = "info", *,
                      stream: TextIO | None = None) -> Literal["json", "console"]:
    """Configure structlog and the stdlib root logger; return the format chosen.

    ``level`` is a name (``debug``, ``info``, ``warning``, ``error``); ``stream`` defaults to
    ``sys.stdout``. Safe to call again (tests do, with a ``StringIO``); loggers are not cached,
    so a call takes effect for loggers obtained before it.
    """
    out = stream if stream is not None else sys.stdout
    chosen = resolve_format(fmt, out)
    levelno = logging.getLevelNamesMapping().get(level.upper())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r}")
    shared = _shared_chain()
    renderer = _renderer(chosen, out)
    structlog.configure(
        processors=[*shared, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, renderer],
    ))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_keeper", False):
            root.removeHandler(h)
    handler._keeper = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(levelno)
    # aiohttp's access log is one line per request: too chatty for the status page's polling
    logging.getLogger("aiohttp.access").setLevel(max(levelno, logging.WARNING))
    return chosen


def register_secrets(values: Iterable[str]) -> None:
    """``register_secret`` for each value."""
    for v in values:
        register_secret(v)
