"""The venue executor that ``[execution]`` names, built from the config (``keeper run``, one
shard or sharded): ``None`` in paper mode, else the paper, reference-venue or HTTP executor with
the signing secret from the environment."""

from __future__ import annotations

from typing import Any

from keeper.app.config import Config
from keeper.errors import ConfigError
from keeper.execution import HttpExecutor, PaperExecutor, SimVenueExecutor
from keeper.execution.base import VenueExecutor

__all__ = ["build_executor"]


def build_executor(cfg: Config) -> VenueExecutor | None:
    """The executor of ``[execution]``; ``None`` in paper mode (nothing is submitted)."""
    x = cfg.execution
    if cfg.keeper.mode == "paper" or x.executor == "paper":
        return None if cfg.keeper.mode == "paper" else PaperExecutor()
    secret = cfg.secrets.hmac_secret
    if secret is None:
        raise ConfigError("execution.executor: the HTTP executors sign requests; set "
                          "KEEPER_HMAC_SECRET (or KEEPER_VENUE_SECRET)")
    kw: dict[str, Any] = {"secret": secret.reveal().encode(), "timeout_s": x.timeout_s,
                          "max_attempts": x.max_attempts, "status_url": x.status_url or None,
                          "retry_after_max_s": x.retry_after_max_s, "keep_warm_s": x.keep_warm_s}
    if x.executor == "sim":
        return SimVenueExecutor(x.url, **kw)
    return HttpExecutor(x.url, **kw)
