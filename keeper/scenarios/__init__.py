"""Seeded scenarios shared by the reference venue and the keeper's tools.

``keeper.scenarios.book`` generates a venue's book of accounts as keeper events. It sits outside
``keeper.sim`` (the reference venue) and outside the keeper's domain so that both sides use the
same book without either importing the other's model: it depends only on the event wire format
(``keeper.domain.events``).
"""

__all__: list[str] = []
