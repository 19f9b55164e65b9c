"""``freqkit simulate``: :func:`freqkit.simulate` on the command line (graph-spectral responses on a token grid)."""

from __future__ import annotations

import argparse
from typing import Any

from freqkit.cli._config import add_signature_arguments, flags_of
from freqkit.errors import ParameterError

EXAMPLES = """examples:
  freqkit simulate                              # 14 x 14 grid, windows 1, 3, ..., 13, full
  freqkit simulate --size 8 12 --windows 1,3,5,full --stencils box3,laplacian --out sim/
  freqkit simulate --periodic --attention       # torus grid, plus windowed softmax attention
"""


def add_parser(subparsers: Any, name: str = "simulate") -> argparse.ArgumentParser:
    """Register the ``simulate`` subcommand."""
    from freqkit.experiment.simulate import DEFAULT_STENCILS, SIMULATE_HELP, simulate

    p = subparsers.add_parser(
        name,
        help="graph-spectral response of window mixers (conv vs attention) and conv stencils on a token grid",
        description="Frequency response r(lambda_j) = (U^T T U)_jj of token mixers T on the H x W token grid, "
        "against the graph frequencies lambda_j of the grid's normalized Laplacian (SPANetV2's analysis).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--size", nargs="+", type=int, default=[14, 14], metavar="N", help="grid H W (or one N for N x N; default 14 14)"
    )
    p.add_argument(
        "--windows",
        default="auto",
        help="comma-separated odd window sizes and/or 'full' (default: 1, 3, ... below the grid side, full)",
    )
    p.add_argument(
        "--stencils",
        default=",".join(DEFAULT_STENCILS),
        help=f"comma-separated conv stencils: box3, box5, gauss3, gauss5, laplacian, sharpen (default {','.join(DEFAULT_STENCILS)}); 'none' for none",
    )
    add_signature_arguments(p, simulate, SIMULATE_HELP)
    p.add_argument("--out", default="freqkit-simulate", metavar="DIR", help="output folder (default freqkit-simulate/)")
    p.set_defaults(run=run)
    return p


def _windows(spec: str) -> list | None:
    if spec == "auto":
        return None
    out: list = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "full":
            out.append(None)
        elif item.isdigit():
            out.append(int(item))
        else:
            raise ParameterError("windows", f"{item!r} is not an odd window size or 'full'; e.g. --windows 1,3,5,full")
    return out


def run(args: argparse.Namespace) -> int:
    """Simulate, write the figures and ``curves.json`` under ``--out``, print the summary."""
    from freqkit.experiment.simulate import simulate

    names = [] if args.stencils.strip() == "none" else [s.strip() for s in args.stencils.split(",") if s.strip()]
    sim = simulate(args.size, windows=_windows(args.windows), stencils=names, **{k: getattr(args, k) for k in flags_of(args)})
    paths = sim.save(args.out)
    print(sim.table())
    for path in paths:
        print(f"wrote {path}")
    return 0
