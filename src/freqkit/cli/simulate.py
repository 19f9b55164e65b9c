"""``freqkit simulate``: graph-spectral responses of window mixers and conv stencils on a token grid.

Builds the symmetric normalized Laplacian of the 4-neighbour H x W grid, its graph Fourier basis,
and the filter matrices of the uniform k x k window average (k = 1, 3, 5, ..., the full grid = global
averaging), optionally softmax attention restricted to each window (random tokens), and a few conv
stencils (box, Gaussian, Laplacian, sharpen). Writes ``windows.png``, ``stencils.png`` (and
``attention.png``) with the response against graph frequency, and ``curves.json`` with every curve
(formulation: :mod:`freqkit.spectral.graph`). torch and matplotlib are imported inside :func:`run`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from freqkit.errors import FreqkitError

EXAMPLES = """examples:
  freqkit simulate                              # 14 x 14 grid, windows 1, 3, ..., 13, full
  freqkit simulate --size 8 12 --windows 1,3,5,full --stencils box3,laplacian --out sim/
  freqkit simulate --periodic --attention       # torus grid, plus windowed softmax attention
"""

STENCILS = ("box3", "box5", "gauss3", "gauss5", "laplacian", "sharpen")
DEFAULT_STENCILS = "box3,gauss5,laplacian,sharpen"


def add_parser(subparsers: Any, name: str = "simulate") -> argparse.ArgumentParser:
    """Register the ``simulate`` subcommand."""
    p = subparsers.add_parser(
        name,
        help="graph-spectral response of window mixers (conv vs attention) and conv stencils on a token grid",
        description="Frequency response r(lambda_j) = (U^T T U)_jj of token mixers T on the H x W token grid, "
        "against the graph frequencies lambda_j of the grid's normalized Laplacian (SPANetV2's analysis).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size", nargs="+", type=int, default=[14, 14], metavar="N", help="grid H W (or one N for N x N; default 14 14)")
    p.add_argument("--windows", default="auto", help="comma-separated odd window sizes and/or 'full' (default: 1, 3, ... below the grid side, full)")
    p.add_argument("--stencils", default=DEFAULT_STENCILS, help=f"comma-separated conv stencils from {', '.join(STENCILS)} (default {DEFAULT_STENCILS}); 'none' for none")
    p.add_argument("--attention", action="store_true", help="also windowed softmax attention of random tokens (seeded)")
    p.add_argument("--periodic", action="store_true", help="torus grid (wrap-around neighbours) instead of an open grid")
    p.add_argument("--bins", type=int, default=16, help="graph-frequency bins of the plotted curves (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attention tokens (default 0)")
    p.add_argument("--out", default="freqkit-simulate", metavar="DIR", help="output folder (default freqkit-simulate/)")
    p.set_defaults(run=run)
    return p


def _grid(values: list[int]) -> tuple[int, int]:
    if len(values) not in (1, 2):
        raise FreqkitError(f"--size takes H W or one N, got {len(values)} numbers; e.g. --size 14 14")
    h, w = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    if h < 2 or w < 2 or h * w > 4096:
        raise FreqkitError(f"--size {h} {w}: use a grid of at least 2 x 2 and at most 4096 tokens (the basis is N x N)")
    return h, w


def _windows(spec: str, h: int, w: int) -> list:
    from freqkit.spectral.graph import default_windows

    if spec == "auto":
        return default_windows(h, w)
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "full":
            out.append(None)
        elif item.isdigit() and int(item) % 2 == 1:
            out.append(int(item))
        else:
            raise FreqkitError(f"--windows: {item!r} is not an odd window size or 'full'; e.g. --windows 1,3,5,full")
    if not out:
        raise FreqkitError("--windows is empty; e.g. --windows 1,3,5,full")
    return out


def _stencil(name: str):
    from freqkit.spectral import graph as g

    makers = {
        "box3": lambda: g.box_stencil(3),
        "box5": lambda: g.box_stencil(5),
        "gauss3": lambda: g.gaussian_stencil(3, 0.8),
        "gauss5": lambda: g.gaussian_stencil(5, 1.0),
        "laplacian": g.laplacian_stencil,
        "sharpen": g.sharpen_stencil,
    }
    if name not in makers:
        raise FreqkitError(f"--stencils: unknown stencil {name!r}; choose from {', '.join(STENCILS)}")
    return makers[name]()


def _curve(g, matrix, freqs, basis, bins: int) -> dict[str, list[float]]:
    f, r, dims = g.eigenspace_response(matrix, freqs, basis)
    # the DC eigenspace keeps its own point: a bin would blur "global averaging passes DC only"
    centres, radial = g.radial_curve(f[1:], r[1:], bins, weights=dims[1:])
    return {
        "freqs": f.tolist(),
        "response": r.tolist(),
        "dims": dims.tolist(),
        "radial_freqs": [float(f[0])] + centres.tolist(),
        "radial_response": [float(r[0])] + radial.tolist(),
    }


def _plot(curves: dict[str, dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in curves.items():
        ax.plot(c["radial_freqs"], c["radial_response"], marker="o", ms=3, label=name)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("graph frequency $\\lambda$ (normalized Laplacian)")
    ax.set_ylabel("response $(U^T T U)_{jj}$")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Compute every curve, write the figures and ``curves.json`` under ``--out``; print a summary."""
    import torch

    from freqkit.spectral import graph as g

    h, w = _grid(args.size)
    if args.bins < 1:
        raise FreqkitError(f"--bins must be >= 1, got {args.bins}")
    windows = _windows(args.windows, h, w)
    names = [] if args.stencils.strip() == "none" else [s.strip() for s in args.stencils.split(",") if s.strip()]
    stencils = {n: _stencil(n) for n in names}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    freqs, basis = g.graph_fourier_basis(g.grid_laplacian(h, w, args.periodic))
    wname = lambda k: "full" if k is None else f"k={k}"  # noqa: E731
    result: dict[str, Any] = {
        "grid": [h, w],
        "periodic": bool(args.periodic),
        "laplacian": "I - D^-1/2 A D^-1/2, 4-neighbour grid",
        "response": "mean of (U^T T U)_jj over each eigenspace; radial: DC, then means over bins of graph frequency",
        "windows": {wname(k): _curve(g, g.window_average(h, w, k, args.periodic), freqs, basis, args.bins) for k in windows},
        "stencils": {},
    }
    for n, s in stencils.items():
        if args.periodic and (s.shape[0] > h or s.shape[1] > w):
            raise FreqkitError(f"stencil {n} is larger than the {h} x {w} torus; use a larger --size")
        result["stencils"][n] = _curve(g, g.stencil_matrix(s, h, w, args.periodic), freqs, basis, args.bins)
    figures = [out / "windows.png"]
    _plot(result["windows"], f"window average on a {h} x {w} grid", figures[0])
    if stencils:
        figures.append(out / "stencils.png")
        _plot(result["stencils"], f"conv stencils on a {h} x {w} grid", figures[-1])
    if args.attention:
        gen = torch.Generator().manual_seed(args.seed)
        tokens = torch.randn(h * w, 16, generator=gen, dtype=torch.float64)
        result["attention"] = {
            wname(k): _curve(g, g.window_attention(tokens, (h, w), k, scale=1.0 / 16, periodic=args.periodic), freqs, basis, args.bins)
            for k in windows
        }
        figures.append(out / "attention.png")
        _plot(result["attention"], f"windowed softmax attention (random tokens), {h} x {w}", figures[-1])
    (out / "curves.json").write_text(json.dumps(result, indent=1))

    print(f"graph-spectral simulation on a {h} x {w} {'torus' if args.periodic else 'grid'} ({h * w} tokens)")
    print(f"{'mixer':<20}{'DC':>8}{'high band |r| (lambda > 1)':>30}")
    for group, kind in (("windows", "window"), ("stencils", "stencil"), ("attention", "attention")):
        for name, c in result.get(group, {}).items():
            hi = [abs(r) for f, r in zip(c["freqs"], c["response"]) if f > 1.0]
            label = f"{kind} {name}"
            print(f"{label:<20}{c['response'][0]:>8.3f}{sum(hi) / max(len(hi), 1):>30.4f}")
    for path in [*figures, out / "curves.json"]:
        print(f"wrote {path}")
    return 0
