"""``keeper compare``: one recorded crash window, one book, isolated versus cross margin.

Writes ``compare-<window>.txt`` (the table), ``compare-<window>.json`` and ``compare-<window>.png``
(a bar chart per outcome, values written on the bars) into ``--out``, and prints the tables.
``--window`` may be given several times. The data folder is ``--data-dir``, else
``KEEPER_DATA_DIR``, else ``../shared/data``.

``--log FILE`` instead: a recorded run at the reference venue (``keeper demo --export FILE``) against
the perfect keeper on the same book and prices (``keeper.replay.measure``): bad debt, collateral
lost, their ratio, and the share of intents the venue rejected because the price had moved.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import structlog

from keeper.errors import ConfigError

__all__ = ["HELP", "add_arguments", "data_dir", "run"]

HELP = "isolated vs cross margin on a recorded crash window: liquidations, losses, bad debt, capital"

log = structlog.get_logger("keeper.compare")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", action="append",
                        help="crash window (the tidy file's event: 2025-10-10, 2022-06, 2021-05-19, ...)")
    parser.add_argument("--chain-log", action="append", type=Path, metavar="FILE",
                        help="instead: a chain venue's exported log (keeper demo --venue chain --export "
                             "DIR writes one a protocol); give one of each protocol to compare them")
    parser.add_argument("--log", action="append", type=Path, metavar="FILE",
                        help="instead: a run's exported log at the reference venue (keeper demo --export "
                             "FILE): the keeper's bad debt and collateral lost against the perfect keeper's")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with event_windows_tidy.csv.gz "
                        "(default: $KEEPER_DATA_DIR or ../shared/data)")
    parser.add_argument("--accounts", type=int, default=2000, help="accounts in the generated book")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated book")
    parser.add_argument("--profile", default="binance-usdm", help="venue profile (strictness)")
    parser.add_argument("--out", type=Path, default=Path("compare-out"), help="output folder")


def data_dir(arg: Path | None) -> Path:
    """The data folder: the flag, ``KEEPER_DATA_DIR``, or ``../shared/data``."""
    p = arg or Path(os.environ.get("KEEPER_DATA_DIR", Path.cwd().parent / "shared" / "data"))
    if not (p / "event_windows_tidy.csv.gz").is_file():
        raise ConfigError(f"--data-dir: {p} has no event_windows_tidy.csv.gz")
    return p


def run(args: argparse.Namespace) -> int:
    from keeper.app.cmd_replay import logs_to_stderr

    with logs_to_stderr():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from keeper.replay.compare import compare, load_window, plot_comparison

    if args.chain_log:
        return _chain(args.chain_log)
    if args.log:
        return _measure(args.log)
    if not args.window:
        raise ConfigError("--window: give a crash window (or --log FILE, --chain-log FILE)")
    src = data_dir(args.data_dir)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.window:
        try:
            window = load_window(src, name)
        except ValueError as exc:
            raise ConfigError(f"--window: {exc}") from None
        res = compare(window, args.accounts, profile=args.profile, seed=args.seed)
        table = res.table()
        print(table)
        print()
        (out / f"compare-{name}.txt").write_text(table + "\n")
        (out / f"compare-{name}.json").write_text(json.dumps(res.to_dict(), indent=2) + "\n")
        log.info("compare_done", window=name, accounts=res.accounts,
                 isolated=res.isolated.totals()["liquidations"], cross=res.cross.totals()["liquidations"])
        plot_comparison(res, out / f"compare-{name}.png")
        results.append(res)
    names = ", ".join(f"compare-{r.window.event}" for r in results)
    print(f"wrote {names} (.txt, .json, .png) in {out}")
    return 0


def _measure(paths: list[Path]) -> int:
    from keeper.replay.measure import measure_log

    for p in paths:
        if not p.is_file():
            raise ConfigError(f"--log: no such file {p}")
    for p in paths:
        m = measure_log(p)
        print(m.table())
        print()
        log.info("compare_log_done", log=str(p), **m.to_dict())
    return 0


def _chain(paths: list[Path]) -> int:
    from keeper.chain.compare import summarise_log
    from keeper.chain.demo import ChainDemoSummary, render

    for p in paths:
        if not p.is_file():
            raise ConfigError(f"--chain-log: no such file {p}")
    protocols = [summarise_log(p) for p in paths]
    print(render(ChainDemoSummary(0, ", ".join(str(p) for p in paths), 0, 0.0, protocols)))
    return 0 if all(p.sound for p in protocols) else 1
