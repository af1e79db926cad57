"""Fixtures for the shell's tests: a captured, reset-after-use logging setup."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from keeper.app.logging import clear_secrets, configure_logging


class Captured(io.StringIO):
    """What the logging setup wrote; ``lines()`` are the non-empty output lines."""

    def lines(self) -> list[str]:
        return [ln for ln in self.getvalue().splitlines() if ln.strip()]


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    """``configure_logging("json", "debug")`` into a buffer; undone afterwards."""
    buf = Captured()
    configure_logging("json", "debug", stream=buf)
    try:
        yield buf
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            if getattr(h, "_keeper", False):
                root.removeHandler(h)
        structlog.reset_defaults()
        clear_secrets()
