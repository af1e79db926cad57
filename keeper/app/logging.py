"""Logging: structlog, JSON lines to stdout in production, a readable console on a terminal.

``configure_logging(fmt, level)`` sets one processor chain for structlog and for the standard
library's loggers (aiohttp, redis-py, asyncio), so every line has the same shape and passes the
same redactor::

    merge_contextvars -> add_log_level -> timestamp (UTC, ISO) -> stack/exception text
      -> redact -> JSONRenderer | ConsoleRenderer

Redaction follows the one rule of ``keeper.redaction``: the value of any key named like a
secret is ``***`` at any depth, and so is every occurrence of a registered secret value inside
any string, tracebacks included. ``keeper.app.config.load_config`` registers the secrets it
reads before anything is logged.

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
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from keeper.redaction import redact_item

__all__ = ["LogFormat", "configure_logging", "redact", "resolve_format"]

LogFormat = Literal["json", "console", "auto"]


def redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-named keys and registered secret values
    (``keeper.redaction``)."""
    return {k: redact_item(k, v) for k, v in event_dict.items()}


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

