"""The daemon's configuration: TOML files and environment overrides, frozen and typed.

Layering (later wins): the defaults in ``schema`` <- the TOML file given by ``--config``
(which may ``include`` other files first) <- environment overrides. The result is validated once
at start; an unknown key or a bad value raises ``ConfigError`` naming the full key and where the
value came from::

    execution.timeout_s: expected `float` > 0.0, got 'abc' (from env KEEPER_EXECUTION__TIMEOUT_S)
    admin.prot: unknown key (from config/default.toml)

Files
    ``include = "default.toml"`` (or a list) at the top of a file loads those files first,
    relative to the including file; the including file's own keys then win. Tables merge key by
    key; arrays (``[[feeds.sources]]``) replace as a whole.

Environment overrides
    ``KEEPER_<SECTION>__<KEY>=value`` sets ``<section>.<key>`` (case-insensitive, double
    underscore between levels, e.g. ``KEEPER_EXECUTION__TIMEOUT_S=2.5``,
    ``KEEPER_LOG__LEVEL=debug``). The value is read as a TOML value when it parses as one
    (``2.5``, ``true``, ``["a", "b"]``) and as a plain string otherwise, or always as a string
    when the key is a string; it is then type-checked like a file value. An override naming an
    unknown key is an error, so a typo never passes silently. Only variables with ``__`` are
    overrides; ``KEEPER_SHARED_DIR`` and the like are left alone.

Secrets come only from the environment, never from a file (a key that looks like one in a file
is an error naming it): ``KEEPER_HMAC_SECRET`` (falls back to ``KEEPER_VENUE_SECRET``, the
variable the HTTP executor reads), ``KEEPER_ADMIN_TOKEN``, ``KEEPER_REDIS_PASSWORD`` and
``REDIS_URL`` (which may carry credentials), and ``KEEPER_CHAIN_KEY`` (the liquidator's
private key on a chain venue). They are held in ``Secret`` (``repr``/``str`` are
``***``), registered with the log redactor, and shown as ``***`` by ``Config.dump()``.

The package: ``schema`` (the sections, ``Config``, ``Secret``), ``load`` (files, overrides,
secrets, ``load_config``) and ``checks`` (the rules that span keys); import every name from
``keeper.app.config``.
"""

from keeper.app.config.load import DEFAULT_FILE, ENV_PREFIX, Sources, load_config
from keeper.app.config.schema import (
    AdminSection,
    Config,
    ExecutionSection,
    FeedSource,
    FeedsSection,
    GuardsSection,
    KeeperSection,
    LogSection,
    NonNegInt,
    Port,
    Positive,
    PositiveInt,
    RedisSection,
    RetentionSection,
    Secret,
    Secrets,
    SnapshotsSection,
    VenueSection,
)

__all__ = [
    "DEFAULT_FILE",
    "ENV_PREFIX",
    "AdminSection",
    "Config",
    "ExecutionSection",
    "FeedSource",
    "FeedsSection",
    "GuardsSection",
    "KeeperSection",
    "LogSection",
    "NonNegInt",
    "Port",
    "Positive",
    "PositiveInt",
    "RedisSection",
    "RetentionSection",
    "Secret",
    "Secrets",
    "SnapshotsSection",
    "Sources",
    "VenueSection",
    "load_config",
]
