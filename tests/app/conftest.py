"""Fixtures for the shell's tests: logging configured into a buffer, undone afterwards."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import TextIO

import pytest
import structlog

from keeper.app.logging import configure_logging
from keeper.redaction import clear_secrets


class Captured(io.StringIO):
    """What the logging setup wrote; ``lines()`` are the non-empty output lines."""

    def lines(self) -> list[str]:
        return [ln for ln in self.getvalue().splitlines() if ln.strip()]


Configure = Callable[..., str]


@pytest.fixture
def log_setup() -> Iterator[Configure]:
    """``configure_logging`` for the test; structlog, the root logger's handlers and levels and
    the registered secrets are restored afterwards."""
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    levels = root.level, access.level

    def configure(fmt: str, level: str, stream: TextIO) -> str:
        return configure_logging(fmt, level, stream=stream)  # type: ignore[arg-type]

    try:
        yield configure
    finally:
        for h in list(root.handlers):
            if getattr(h, "_keeper", False):
                root.removeHandler(h)
        root.setLevel(levels[0])
        access.setLevel(levels[1])
        structlog.reset_defaults()
        clear_secrets()


@pytest.fixture
def json_logs(log_setup: Configure) -> Captured:
    """JSON logs at debug level into a buffer."""
    buf = Captured()
    log_setup("json", "debug", buf)
    return buf
