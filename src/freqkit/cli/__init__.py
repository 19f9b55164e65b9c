"""The ``freqkit`` command: one subcommand per module of this package.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int`` and imports
torch / timm only inside ``run``, so that ``freqkit --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Optional

from freqkit.errors import FreqkitError, ParameterError

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


def error_line(err: FreqkitError, args: Optional[argparse.Namespace]) -> str:
    """``err`` for the command line, the one place parameters become flags.

    A ParameterError's parameter is shown as its flag; inside any message ``param=True`` / ``param=False`` /
    ``param=VALUE`` read as ``--flag`` / ``no --flag`` / ``--flag VALUE``, then the subcommand's ``_flag_patterns``
    (regex, replacement) pairs apply.
    """
    from freqkit.cli._config import flags_of

    flags = flags_of(args)
    message = str(err)
    if isinstance(err, ParameterError):
        message = f"{flags.get(err.param, '--' + err.param.replace('_', '-'))} {err.detail}"
    for param, flag in flags.items():  # whole names only: min_lr= is not lr=
        message = re.sub(
            rf"(?<![\w-]){re.escape(param)}=(True|False)?",
            lambda m, flag=flag: {"True": flag, "False": f"no {flag}"}.get(m.group(1) or "", f"{flag} "),
            message,
        )
    for pattern, replacement in (getattr(args, "_flag_patterns", None) or []) if args is not None else []:
        message = re.sub(pattern, replacement, message)
    return message


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
        # one line: a multi-line message (e.g. a DataLoader worker's traceback) keeps its first line
        line = " ".join(error_line(err, args).split("\n")[0].split())
        print(f"freqkit {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("freqkit: interrupted", file=sys.stderr)
        return 130
