"""The reference venue (``keeper sim``): a margin venue the keeper runs against in the demo,
end-to-end and fault tests. ``venue`` holds the state and the venue's own rules, ``server`` the
aiohttp shell (REST + websockets), ``book`` the seeded book of accounts, ``prices`` the price
paths. The wire protocol is in ``PROTOCOL.md`` beside this file.
"""
