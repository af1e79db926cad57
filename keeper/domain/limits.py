"""The range of every number an event may carry: the one place the door's limits are stated.

Every path into the log (price feeds, the venue's account stream, ``keeper log import``, the chain
ingest, the keeper's own outcomes) builds or decodes events, and an event checks its fields when
it is built or decoded (``keeper.domain.checks``, installed as each class's ``__post_init__``). A
number outside these limits makes the event impossible to construct: a feed drops the frame and
dead-letters it, a log entry is dead-lettered on read, an import refuses the file naming the
line. Nothing outside them ever reaches the state, the screen (floats) or the margin engine, so
an entry such as a price of ``1e400`` or a 100,000-digit amount cannot stop the projector.

The limits are wide: far outside anything a venue publishes, and inside what every consumer
handles exactly (a product of two bounded numbers stays far below the decimal context's
exponent limit, and a bounded price converts to a finite, non-zero float for the screen).
Magnitudes are checked with ``Decimal.adjusted()`` (the exponent of the leading digit), which is
cheap on the decode path.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AMOUNT_MAX_EXP",
    "AMOUNT_MIN_EXP",
    "PARAM_MAX_EXP",
    "PARAM_MIN_EXP",
    "PRICE_MAX_EXP",
    "PRICE_MIN_EXP",
    "TIME_MAX_US",
]

PRICE_MAX_EXP: Final = 15
"""A price is below ``10**16`` (no market quotes a unit at ten quadrillion)."""
PRICE_MIN_EXP: Final = -18
"""A price is at least ``10**-18`` (a meme coin at a billionth of a cent is ``10**-11``)."""
AMOUNT_MAX_EXP: Final = 20
"""An amount, size, PnL or balance change is below ``10**21`` in magnitude (in token units, not
wei: the whole supply of the largest tokens is ``~10**15``)."""
AMOUNT_MIN_EXP: Final = -30
"""A non-zero amount is at least ``10**-30`` in magnitude (tokens have at most 18 decimals)."""
PARAM_MAX_EXP: Final = 12
"""A market or asset parameter (a fraction, a leverage, a tier's floor in quote units) is below
``10**13``, and a non-zero one at least ``10**-18``."""
PARAM_MIN_EXP: Final = -18
TIME_MAX_US: Final = 10**17
"""Times (``ts_event``, ``ts_ingest``, ``publish_time``: microseconds since 1970) are in
``[0, 10**17)``, i.e. before the year 5138: a time in nanoseconds or garbage is refused."""
