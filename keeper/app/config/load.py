"""Loading: TOML files with includes, environment overrides, secrets, type errors explained.

``load_config(path, env=...)`` reads ``path`` with its includes merged under it, refuses a
secret in a file, applies the ``KEEPER_<SECTION>__<KEY>`` overrides, converts the result to a
``Config`` (a type error becomes a ``ConfigError`` naming the key, the expected type and where
the value came from), checks the rules that span keys (``keeper.app.config.checks``), reads
the secrets from the environment and hands them to the log redactor. It never writes anything.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import msgspec

from keeper.app.config.checks import check
from keeper.app.config.schema import Config, Secret, Secrets
from keeper.errors import ConfigError
from keeper.redaction import is_secret_key, register_secret

__all__ = ["DEFAULT_FILE", "ENV_PREFIX", "Sources", "load_config"]

ENV_PREFIX = "KEEPER_"
DEFAULT_FILE = Path("config/default.toml")

Sources = dict[str, str]
"""Dotted key -> where its value came from (a file path or ``env NAME``)."""


def _read_toml(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], Sources, list[str]]:
    """One file with its includes merged under it; ``ConfigError`` for cycles and bad TOML."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"include: cycle {chain}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        where = f" (included from {seen[-1]})" if seen else ""
        raise ConfigError(f"config file {path} not found{where}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    include = raw.pop("include", [])
    if isinstance(include, str):
        include = [include]
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise ConfigError(f"include: expected a file name or a list of them (from {path})")
    merged: dict[str, Any] = {}
    sources: Sources = {}
    files: list[str] = []
    for inc in include:
        sub, sub_src, sub_files = _read_toml(path.parent / inc, (*seen, path))
        _merge(merged, sub, sources, sub_src)
        files += sub_files
    own_src: Sources = {}
    _record(raw, str(path), own_src, "")
    _merge(merged, raw, sources, own_src)
    files.append(str(path))
    return merged, sources, files


def _record(raw: Mapping[str, Any], origin: str, sources: Sources, prefix: str) -> None:
    for k, v in raw.items():
        key = f"{prefix}{k}"
        sources[key] = origin
        if isinstance(v, dict):
            _record(v, origin, sources, key + ".")


def _merge(into: dict[str, Any], new: Mapping[str, Any], sources: Sources, new_src: Sources,
           prefix: str = "") -> None:
    for k, v in new.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v, sources, new_src, key + ".")
            sources[key] = new_src.get(key, sources.get(key, ""))
            continue
        into[k] = v
        for s in [s for s in sources if s == key or s.startswith(key + ".")]:
            del sources[s]
        sources.update({s: o for s, o in new_src.items() if s == key or s.startswith(key + ".")})


def _reject_file_secrets(raw: Mapping[str, Any], sources: Sources, prefix: str = "") -> None:
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if prefix == "" and k == "secrets":
            raise ConfigError(f"secrets: secrets come only from the environment, not from a file "
                              f"(from {sources.get(key, '?')})")
        if is_secret_key(k):
            raise ConfigError(f"{key}: looks like a secret; secrets come only from the environment "
                              f"(KEEPER_HMAC_SECRET, KEEPER_ADMIN_TOKEN, KEEPER_REDIS_PASSWORD, "
                              f"REDIS_URL) (from {sources.get(key, '?')})")
        if isinstance(v, dict):
            _reject_file_secrets(v, sources, key + ".")
        elif isinstance(v, str) and key == "redis.url" and urlsplit(v).password:
            raise ConfigError(f"redis.url: carries a password; put it in KEEPER_REDIS_PASSWORD or "
                              f"REDIS_URL instead (from {sources.get(key, '?')})")


def _is_str(tp: Any) -> bool:
    hints = _unwrap(tp)
    if hints is str:
        return True
    return get_origin(hints) is Literal and all(isinstance(a, str) for a in get_args(hints))


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _env_overrides(env: Mapping[str, str], raw: dict[str, Any], sources: Sources) -> None:
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or "__" not in upper:
            continue
        path = [p.lower() for p in upper[len(ENV_PREFIX):].split("__")]
        key = ".".join(path)
        if any(is_secret_key(p) for p in path):
            raise ConfigError(f"{key}: secrets have their own variables (KEEPER_HMAC_SECRET, "
                              f"KEEPER_ADMIN_TOKEN, KEEPER_REDIS_PASSWORD, REDIS_URL) (from env {name})")
        tp = None if path[0] in ("secrets", "sources") else _type_at(list(path))
        if tp is None:
            raise ConfigError(f"{key}: unknown key (from env {name})")
        value: Any = env[name]
        if not _is_str(tp):
            # when it does not parse it stays a string: the type check names the key and value
            with contextlib.suppress(tomllib.TOMLDecodeError):
                value = tomllib.loads(f"v = {value}")["v"]
        node = raw
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {'.'.join(path[:-1])} is not a table (from env {name})")
            node = nxt
        node[path[-1]] = value
        sources[key] = f"env {name}"


_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _lookup(raw: Any, path: list[str | int]) -> Any:
    node = raw
    for p in path:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _explain(exc: msgspec.ValidationError, raw: dict[str, Any], sources: Sources) -> ConfigError:
    text = str(exc)
    m = _AT.match(text)
    msg, where = (m["msg"], m["path"]) if m else (text, "")
    steps: list[str | int] = []
    for tok in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where):
        steps.append(tok[0] if tok[0] else int(tok[1]))
    um = _UNKNOWN.match(msg)
    if um:
        steps.append(um["field"])
    key = ""
    for s in steps:
        key += f"[{s}]" if isinstance(s, int) else (f".{s}" if key else s)
    src_key = re.sub(r"\[\d+\]", "", key)
    origin = sources.get(src_key) or sources.get(src_key.rpartition(".")[0]) or "defaults"
    if um:
        return ConfigError(f"{key}: unknown key (from {origin})")
    value = _lookup(raw, steps)
    if msg.startswith("Invalid enum value"):
        choices = get_args(_unwrap(_type_at(steps)))
        msg = "expected one of " + ", ".join(repr(c) for c in choices)
    if ", got `" in msg:
        msg = msg.split(", got `")[0] + _bounds(_type_at(steps))
    for word, plain in _PLAIN.items():
        msg = msg.replace(word, plain)
    msg = re.sub(r"(\d+)\.0\b", r"\1", msg)
    got = "" if value is None else f", got {value!r}"
    return ConfigError(f"{key}: {msg[0].lower()}{msg[1:]}{got} (from {origin})")


_PLAIN = {"`float`": "a number", "`int`": "an integer", "`str`": "a string",
          "`bool`": "true or false", "`object`": "a table", "`array`": "an array",
          "`decimal`": "a decimal string"}


def _bounds(tp: Any) -> str:
    """`` > 0``-style text for the numeric bounds of an ``Annotated`` type (or ``""``)."""
    out = ""
    for meta in get_args(tp)[1:] if get_origin(tp) is Annotated else ():
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                out += f"{' and' if out else ''} {sym} {bound}"
    return out


def _type_at(steps: list[str] | list[str | int]) -> Any:
    """The annotated type at a path of ``Config`` (an array index steps into the item type);
    ``None`` when there is no such key."""
    tp: Any = Config
    for s in steps:
        inner = _unwrap(tp)
        if isinstance(s, int):
            tp = get_args(inner)[0] if get_args(inner) else None
        elif hasattr(inner, "__struct_fields__"):
            tp = get_type_hints(inner, include_extras=True).get(s)
        else:
            tp = None
        if tp is None:
            return None
    return tp


def _secrets(env: Mapping[str, str]) -> Secrets:
    def get(*names: str) -> Secret | None:
        for n in names:
            v = env.get(n)
            if v:
                return Secret(v)
        return None

    return Secrets(hmac_secret=get("KEEPER_HMAC_SECRET", "KEEPER_VENUE_SECRET"),
                   admin_token=get("KEEPER_ADMIN_TOKEN"),
                   redis_password=get("KEEPER_REDIS_PASSWORD"),
                   redis_url=get("REDIS_URL"),
                   chain_key=get("KEEPER_CHAIN_KEY"))


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                register_secrets: bool = True) -> Config:
    """Load, layer and validate the configuration.

    ``path`` is the ``--config`` file (``None``: built-in defaults only); ``env`` defaults to
    ``os.environ``. Raises ``ConfigError`` naming the key and its source on the first problem.
    With ``register_secrets`` the secret values are handed to the log redactor
    (``keeper.redaction.register_secret``) before anything is logged.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    sources: Sources = {}
    files: list[str] = []
    if path is not None:
        raw, sources, files = _read_toml(Path(path), ())
        _reject_file_secrets(raw, sources)
        if "sources" in raw:
            raise ConfigError(f"sources: unknown key (from {sources.get('sources', path)})")
    _env_overrides(env, raw, sources)
    try:
        cfg = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, raw, sources) from None
    check(cfg, sources)
    secrets = _secrets(env)
    if register_secrets:
        for value in secrets.values():
            register_secret(value)
        pw = secrets.redis_url and urlsplit(secrets.redis_url.reveal()).password
        if pw:
            register_secret(pw)
    cfg = msgspec.structs.replace(cfg, secrets=secrets, sources=tuple(files))
    url = cfg.redis_url()
    if url:
        from keeper.app.datadir import check_redis_url

        check_redis_url(url, "REDIS_URL" if cfg.secrets.redis_url is not None
                        else f"redis.url (from {sources.get('redis.url', 'defaults')})")
    return cfg
