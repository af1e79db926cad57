"""Going back in time through the log: replay, verify, explain, plot, and the what-if.

- ``source``: the log from an NDJSON export or a Redis stream, as decoded batches in log order;
- ``replay``: those batches through the keeper's own core (``KeeperCore``), GC paused;
- ``parallel`` (with ``route``): the same over an NDJSON export with the accounts split between
  forked workers (``keeper replay --jobs N``), the same decisions in the same order;
- ``verify``: re-derived decisions against the recorded ones, byte for byte;
- ``explain`` / ``plot``: one account's chain of health, decisions and outcomes;
- ``manifest``: what configuration ran over which part of the log;
- ``job`` (with ``selection``): one replay as a typed job, the cores chosen from the run's
  manifest or a snapshot, what ``keeper replay`` runs;
- ``compare``: one crash, one book, isolated versus cross margin.

``docs/replay.md`` describes the commands built on them (``keeper replay``, ``keeper compare``).
"""

__all__: list[str] = []
