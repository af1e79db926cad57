"""``keeper demo``: embedded Redis + the reference venue + the daemon through a real crash window,
ending with a summary table; exit 0 only when the run was sound (see ``keeper.app.demo``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from pathlib import Path

from keeper.app import datadir
from keeper.app.demo import DemoOptions, default_shared_data, run_demo
from keeper.app.demo_summary import render
from keeper.app.logging import configure_logging

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run the whole keeper against the reference venue through a recorded crash, then summarise"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--venue", choices=["sim", "chain"], default="sim",
                        help="sim: the reference venue (perps and lending); chain: Morpho Blue (isolated) "
                             "and Aave v3 (cross) on their own bytecode on a private anvil")
    parser.add_argument("--accounts", type=int, default=None,
                        help="accounts in the venue's book (default 10,000; 1,000 with --venue chain)")
    parser.add_argument("--window", default=None,
                        help="the crash event in ../shared/data (keeper feed list: 2020-03-12, 2021-05-19, "
                             "2022-06, 2022-11, 2024-08-05, 2025-10-10), or synthetic (default 2025-10-10, "
                             "the synthetic crash when the data is absent)")
    parser.add_argument("--start", default=None,
                        help="window start (UTC ISO; default: the window's 6 hours around its largest bar, "
                             "2025-10-10 18:00 for 2025-10-10)")
    parser.add_argument("--end", default=None, help="window end (UTC ISO; default: 6 hours after --start)")
    parser.add_argument("--tick-ms", type=float, default=25.0,
                        help="wall milliseconds between price ticks (the playback pace)")
    parser.add_argument("--step", type=Decimal, default=Decimal("0.001"),
                        help="largest move of a price between two ticks, as a fraction (0.001 = 0.1%%)")
    parser.add_argument("--export", type=Path, metavar="FILE",
                        help="write the run's log as NDJSON (--venue chain: a folder, one log a protocol)")
    parser.add_argument("--summary-json", type=Path, metavar="FILE", help="write the summary as JSON")
    parser.add_argument("--data-dir", type=Path, default=datadir.DEFAULT,
                        help="the data folder (default .keeper): the log in DIR/redis, where keeper log "
                             "and keeper replay read it (a demo's log there is replaced, another refused), "
                             "the venue's files in DIR/demo")
    parser.add_argument("--shared-data", type=Path, default=None,
                        help="crash data folder (default KEEPER_DATA_DIR or ../shared/data)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--sizing", choices=["least", "largest"], default=None,
                        help="the keeper's sizing policy (default: the configuration's, largest; "
                             "docs/margin.md)")
    parser.add_argument("--daemon-in-process", action="store_true",
                        help="run the daemon on the demo driver's event loop instead of a process of its own "
                             "(for comparison: docs/performance.md)")


def run(args: argparse.Namespace) -> int:
    configure_logging("console" if sys.stderr.isatty() else "json", args.log_level, stream=sys.stderr)
    if args.venue == "chain":
        return _run_chain(args)
    opts = DemoOptions(accounts=args.accounts or 10_000, window=args.window or "2025-10-10",
                       window_given=args.window is not None, start=args.start, end=args.end,
                       tick_s=args.tick_ms / 1000, step=args.step, data_dir=args.data_dir,
                       shared_data=args.shared_data or default_shared_data(), export=args.export,
                       summary_json=args.summary_json, progress=not args.no_progress,
                       daemon_process=not args.daemon_in_process, sizing=args.sizing)
    summary = asyncio.run(run_demo(opts))
    print(render(summary))
    return 0 if summary.sound else 1


def _run_chain(args: argparse.Namespace) -> int:
    import json

    from keeper.chain.demo import ChainDemoOptions, run_chain_demo, summary_json
    from keeper.chain.demo import render as render_chain

    # the chain demo's own window where the sim demo's default is given: the three hours around
    # the crash (each point a block, each liquidation a block too: a longer window is slow here)
    default = args.start is None and args.end is None
    start, end = ("2025-10-10T20:00:00Z", "2025-10-10T23:00:00Z") if default else (args.start, args.end)
    opts = ChainDemoOptions(accounts=args.accounts or 1_000, window=args.window or "2025-10-10",
                            start=start, end=end,
                            shared_data=args.shared_data or default_shared_data(), export=args.export)
    summary = asyncio.run(run_chain_demo(opts))
    print(render_chain(summary))
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary_json(summary), indent=1, sort_keys=True) + "\n")
    return 0 if summary.sound else 1
