"""One way to build a keeper core from its params: the bucket core or a chain venue's core.

``KeeperParams.chain`` names the chain venue whose contract events a core folds (``morpho-blue``);
``None`` is the bucket core over venue account events. The daemon, ``keeper replay`` and the
keeper role build cores here only, so a run manifest's params are enough to rebuild any core.
"""

from __future__ import annotations

from keeper.domain.aave_v3.core import AaveCore
from keeper.domain.decide import KeeperCore
from keeper.domain.morpho.core import MorphoCore
from keeper.domain.params import KeeperParams
from keeper.errors import ConfigError

__all__ = ["CHAINS", "AnyCore", "fmt_of", "make_core"]

AnyCore = KeeperCore | MorphoCore | AaveCore
CHAINS = ("morpho-blue", "aave-v3.0")


def fmt_of(params: KeeperParams) -> int:
    """The snapshot format of the core ``params`` build."""
    if params.chain is None:
        return KeeperCore.FORMAT
    return AaveCore.FORMAT if params.chain == "aave-v3.0" else MorphoCore.FORMAT


def make_core(params: KeeperParams, snapshot: bytes | None = None) -> AnyCore:
    """A fresh core for ``params`` (``snapshot`` None) or one restored from its snapshot bytes."""
    if params.chain is None:
        return KeeperCore(params) if snapshot is None else KeeperCore.restore(snapshot, params)
    if params.chain == "morpho-blue":
        return MorphoCore(params) if snapshot is None else MorphoCore.restore(snapshot, params)
    if params.chain == "aave-v3.0":
        return AaveCore(params) if snapshot is None else AaveCore.restore(snapshot, params)
    raise ConfigError(f"chain {params.chain!r}: no keeper core for it (known: {', '.join(CHAINS)})")
