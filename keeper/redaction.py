"""The one rule for secrets: which keys and values are secret, and how each is shown.

What is secret
    - a **key** named like a secret: its name contains ``secret``, ``token``, ``password``,
      ``passwd``, ``authorization``, ``api_key`` or ``hmac`` (any case; ``is_secret_key``). The
      configuration refuses such a key in a file or an override (secrets come only from their
      own environment variables), and a log line shows its value as ``***``;
    - a **registered value**: every secret the configuration read (``register_secret``), shown as
      ``***`` wherever it appears inside any logged string, tracebacks included. Values shorter
      than four characters are not registered (masking every "abc" would wreck the logs and such
      a value protects nothing);
    - the **credentials of a URL**: a service URL (Redis) is shown with its password as ``***``
      (``mask_password``); a chain node's URL often carries an API key in its path or query, so
      it is shown as scheme, host and port only (``redact_url``).

How it is shown
    Always as ``REDACTED`` (``***``). A container under a secret-named key (``"secrets": {...}``)
    is walked rather than blanked, so a dump still says which secrets are set.

The registry of values is process-wide (one process, one set of secrets); ``clear_secrets`` is
for tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "SECRET_KEY",
    "clear_secrets",
    "is_secret_key",
    "mask_password",
    "redact_item",
    "redact_text",
    "redact_url",
    "redact_value",
    "register_secret",
    "register_secrets",
]

REDACTED = "***"
"""How every secret is shown."""

SECRET_KEY = re.compile(r"secret|token|password|passwd|authorization|api_key|hmac", re.IGNORECASE)
"""A key whose name matches this holds a secret."""

_MIN_SECRET_LEN = 4

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def is_secret_key(name: str) -> bool:
    """True when a key named ``name`` holds a secret (see the module docstring)."""
    return SECRET_KEY.search(name) is not None


def register_secret(value: str) -> None:
    """Redact ``value`` wherever it appears in a logged string from now on (process-wide)."""
    global _pattern
    if len(value) < _MIN_SECRET_LEN or value in _secrets:
        return
    _secrets.add(value)
    # longest first, so a secret that contains another is replaced whole
    alts = sorted(_secrets, key=len, reverse=True)
    _pattern = re.compile("|".join(re.escape(s) for s in alts))


def register_secrets(values: Iterable[str]) -> None:
    """``register_secret`` for each value."""
    for v in values:
        register_secret(v)


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    global _pattern
    _secrets.clear()
    _pattern = None


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _pattern.sub(REDACTED, text) if _pattern is not None else text


def redact_value(value: Any) -> Any:
    """``value`` with registered secrets replaced and secret-named keys masked, recursively.

    Mappings and sequences are rebuilt (a sequence as a list); numbers, booleans and ``None``
    pass as they are; anything else is returned as is unless its ``str()`` holds a registered
    secret, in which case that text is returned redacted.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    if _pattern is not None and _pattern.search(text):
        return _pattern.sub(REDACTED, text)
    return value


def redact_item(key: object, value: Any) -> Any:
    """The value shown for ``key: value``: ``***`` under a secret-named key (a scalar that is
    set), else ``redact_value(value)``."""
    if (isinstance(key, str) and is_secret_key(key) and value is not None
            and not isinstance(value, Mapping | list | tuple)):
        return REDACTED
    return redact_value(value)


def mask_password(url: str) -> str:
    """A service URL with its password, if any, shown as ``***`` (user, host, path kept)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}"))


def redact_url(url: str) -> str:
    """A node URL as it may be shown: scheme, host and port; no user or password, a path shown
    as ``/…``, no query or fragment (node providers put API keys in all of these)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    path = "/…" if parts.path not in ("", "/") else parts.path
    return urlunsplit((parts.scheme, host, path, "", ""))
