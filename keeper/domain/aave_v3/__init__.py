"""Aave v3.0.2 as its contracts compute it: ray math and interest, the reserves and users folded
from the pool's, the configurator's and the tokens' own events, the account data and
``liquidationCall``, and the sans-I/O keeper core for an Aave pool on a chain.

Pure and exact: balances are the tokens' scaled balances, indexes and rates the reserves' own,
every rounding the contracts' (``WadRayMath`` half-up, ``PercentageMath`` half-up, the base
currency values floored). Source: ``@aave/core-v3`` 1.19.3 (Aave v3.0.2), ``contracts/protocol``.
"""

__all__: list[str] = []
