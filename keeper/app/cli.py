"""The ``keeper`` command. Each subcommand is a module ``keeper.app.cmd_<name>`` that defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when used, so ``keeper health`` does not pay for aiohttp or numpy start-up.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from keeper import __version__
from keeper.errors import KeeperError

COMMANDS = ("run", "demo", "health", "log", "feed", "sim", "replay", "compare")


def _available() -> list[str]:
    return [c for c in COMMANDS if importlib.util.find_spec(f"keeper.app.cmd_{c}") is not None]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keeper", description="Event-sourced liquidation keeper.")
    parser.add_argument("--version", action="version", version=f"keeper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _available():
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        mod = importlib.import_module(f"keeper.app.cmd_{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(args_list)
    mod = getattr(args, "_module", None)
    if mod is None:
        parser.print_help()
        return 2
    try:
        return int(mod.run(args))
    except KeeperError as exc:
        print(f"keeper {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
