"""The reference venue (``keeper sim``): a margin venue the keeper runs against in the demo,
end-to-end and fault tests, and an independent second opinion on the keeper's decisions.

``venue`` holds the state and the venue's own rules, ``model`` its own accounts and listings,
``results`` what it answers and counts, ``server`` the aiohttp shell (REST + websockets),
``wire`` the protocol's signatures and price frames, ``faults`` the injected faults, ``ideal``
the perfect keeper on the same run, ``prices`` the price paths, ``process`` the venue as a child
process. The seeded book of accounts it serves is ``keeper.scenarios.book``.

Of the keeper, the venue imports only the event wire format (``keeper.domain.events``,
``keeper.domain.codec``); the wire protocol is in ``PROTOCOL.md`` beside this file.
"""

__all__: list[str] = []
