"""The ``keeper`` command. Each subcommand is a module ``keeper.app.cmd_<name>`` that defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only
when used, so ``keeper health`` does not pay for aiohttp or numpy start-up.

Errors: a ``KeeperError`` is the user's to fix and says how, in one line on stderr
(``keeper CMD: error: ...``), exit status 1; anything else is one line too, naming its type and
``--debug``; ``keeper --debug CMD ...`` lets either end in its traceback instead. A closed pipe
on stdout (``keeper log tail | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from keeper import __version__
from keeper.errors import KeeperError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = ("run", "demo", "health", "log", "feed", "sim", "replay", "compare")


def _available() -> list[str]:
    return [c for c in COMMANDS if importlib.util.find_spec(f"keeper.app.cmd_{c}") is not None]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keeper", description="Event-sourced liquidation keeper.")
    parser.add_argument("--version", action="version", version=f"keeper {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show its traceback instead of one line")
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
        if args.debug:
            raise
        print(f"keeper {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away: stop writing (and keep Python from complaining at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"keeper {args.command}: error: {type(exc).__name__}: {_one_line(str(exc))} "
              f"(unexpected: keeper --debug {args.command} ... shows the traceback)", file=sys.stderr)
        return 1


def _one_line(text: str, limit: int = 2000) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


if __name__ == "__main__":
    sys.exit(main())
