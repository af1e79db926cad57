"""Where a demo run's bad debt beyond the perfect keeper's comes from (``keeper.sim.attribution``).

    python bench/demo_attribution.py EXPORT.ndjson [--accounts N] [--start ISO --end ISO] [--top K]

``EXPORT``: a ``keeper demo --export`` of a run with the same options (the book and the path are
rebuilt from them, as the demo builds them). Prints the split of the excess (conflated ticks,
late decisions, sizing, execution) and the buckets with the largest excess.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keeper.app.demo import DemoOptions, default_shared_data, demo_path
from keeper.scenarios.book import generate_book
from keeper.sim.attribution import attribute
from keeper.sim.ideal import ideal_run
from keeper.store.ndjson import iter_ndjson_batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--start", default=None)
    ap.add_argument("--end", default=None)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    opts = DemoOptions(accounts=args.accounts, start=args.start, end=args.end,
                       shared_data=default_shared_data())
    path, _, _ = demo_path(opts)
    book = generate_book(opts.accounts, opts.seed, path[0].prices)
    entries = [pair for batch in iter_ndjson_batches(args.export) for pair in batch]
    ideal = ideal_run(book.events, path)
    print(attribute(book.events, path, entries, ideal).table(args.top))


if __name__ == "__main__":
    main()
