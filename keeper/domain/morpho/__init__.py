"""Morpho Blue as its contract computes it: integer math, the market and position fold, the
liquidation rule, and the sans-I/O keeper core for Morpho markets on a chain.

Everything here is pure and exact: token amounts, shares and prices are the contract's own
integers (no ``Decimal``, no float), and every rounding is the contract's own direction
(``mathlib``). Source: ``@morpho-org/morpho-blue`` 1.0.0, ``src/Morpho.sol`` and
``src/libraries``.
"""

__all__: list[str] = []
