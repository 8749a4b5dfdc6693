"""``python -m naturall2s <command>``: one module per command in this package.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
it imports heavy libraries inside ``run`` so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module (in this package); the order is the order of --help
COMMANDS = {
    "roi": "roi",
    "prepare": "prepare",
    "train": "train",
    "synthesize": "synthesize",
    "evaluate": "evaluate",
    "models": "models",
    "adapt": "adapt",
    "live": "live",
}


def at_least(minimum: float, kind=float):
    """An argparse ``type`` that parses ``kind`` and refuses values below ``minimum``."""
    def parse(text: str):
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _load(module: str):
    try:
        return importlib.import_module(f"naturall2s.cli.{module}")
    except ModuleNotFoundError as e:  # a command whose module is not written yet
        if e.name == f"naturall2s.cli.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m naturall2s",
        description="NaturalL2S Studio: speech from silent talking-face video (lip-to-speech).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        mod = _load(module)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from naturall2s.errors import NaturalL2SError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except NaturalL2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
