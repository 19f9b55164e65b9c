"""The ``freqkit`` command: one subcommand per module of this package.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int`` and imports
torch / timm only inside ``run``, so that ``freqkit --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from freqkit.errors import FreqkitError

# subcommand name -> module under freqkit.cli
SUBCOMMANDS: dict[str, str] = {
    "analyze": "analyze",
    "compare": "compare",
    "train": "train",
    "eval": "evaluate",
    "simulate": "simulate",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="freqkit",
        description="Diagnose, fix and train the frequency behaviour of vision backbones.",
    )
    from freqkit import __version__

    parser.add_argument("--version", action="version", version=f"freqkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        mod = importlib.import_module(f"freqkit.cli.{module}")
        mod.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; bad input ends with one line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except FreqkitError as err:
        from freqkit.cli._config import error_line

        # one line: a multi-line message (e.g. a DataLoader worker's traceback) keeps its first line
        line = " ".join(error_line(err, args).split("\n")[0].split())
        print(f"freqkit {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("freqkit: interrupted", file=sys.stderr)
        return 130
