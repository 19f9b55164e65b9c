"""Graph-spectral simulation: responses of window mixers, windowed attention and conv stencils on a token grid.

Token mixers are graph filters T on the H x W grid; the response at graph frequency lambda_j (the
j-th eigenvalue of the grid's symmetric normalized Laplacian L = I - D^-1/2 A D^-1/2) is
(U^T T U)_jj, averaged over each eigenspace (SPANetV2, Yun & Ro 2024). Window averages pass less
high frequency as the window grows, tending to global attention's pure low-pass; stencils with
negative taps are high-pass. ``freqkit simulate`` is :func:`simulate` on the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from freqkit import render
from freqkit.errors import FreqkitError, ParameterError
from freqkit.io import check_writable_dir, json_text

__all__ = ["simulate", "Simulation", "DEFAULT_STENCILS", "SIMULATE_HELP"]

DEFAULT_STENCILS = ("box3", "gauss5", "laplacian", "sharpen")
# help of simulate's scalar options (the ``freqkit simulate`` flags are generated from the signature and these)
SIMULATE_HELP = {
    "attention": "also windowed softmax attention of random tokens (seeded)",
    "periodic": "torus grid (wrap-around neighbours) instead of an open grid",
    "bins": "graph-frequency bins of the plotted curves",
    "seed": "seed of the attention tokens",
}
_GROUPS = (
    ("windows", "window average"),
    ("stencils", "conv stencils"),
    ("attention", "windowed softmax attention (random tokens)"),
)


@dataclass
class Simulation:
    """Curves of :func:`simulate`: ``curves[group][name]`` with ``freqs``, ``response``, ``dims`` and the binned radial curve."""

    grid: tuple[int, int]
    periodic: bool
    curves: dict[str, dict[str, dict[str, list[float]]]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the layout of ``curves.json``)."""
        return {
            "grid": list(self.grid),
            "periodic": self.periodic,
            "laplacian": "I - D^-1/2 A D^-1/2, 4-neighbour grid",
            "response": "mean of (U^T T U)_jj over each eigenspace; radial: DC, then means over bins of graph frequency",
            **self.curves,
        }

    def summary(self) -> list[tuple[str, float, float]]:
        """(mixer, response at DC, mean |response| over lambda > 1) per curve."""
        rows = []
        for group, kind in (("windows", "window"), ("stencils", "stencil"), ("attention", "attention")):
            for name, c in self.curves.get(group, {}).items():
                hi = [abs(r) for f, r in zip(c["freqs"], c["response"]) if f > 1.0]
                rows.append((f"{kind} {name}", c["response"][0], sum(hi) / max(len(hi), 1)))
        return rows

    def table(self) -> str:
        """Plain-text summary: DC and high-band response of each mixer."""
        h, w = self.grid
        lines = [
            f"graph-spectral simulation on a {h} x {w} {'torus' if self.periodic else 'grid'} ({h * w} tokens)",
            f"{'mixer':<20}{'DC':>8}{'high band |r| (lambda > 1)':>30}",
        ]
        lines += [f"{name:<20}{dc:>8.3f}{hi:>30.4f}" for name, dc, hi in self.summary()]
        return "\n".join(lines)

    def plot(self) -> dict[str, Any]:
        """Matplotlib figures by file stem (``windows``, ``stencils``, ``attention``): response against graph frequency."""
        from matplotlib.figure import Figure

        h, w = self.grid
        figs = {}
        for group, title in _GROUPS:
            curves = self.curves.get(group)
            if not curves:
                continue
            fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")  # its own dpi: the curves need the detail
            ax = fig.subplots()
            for name, c in curves.items():
                ax.plot(c["radial_freqs"], c["radial_response"], marker="o", ms=3, label=name)
            ax.axhline(0.0, color="0.6", lw=0.8)
            ax.set_xlabel("graph frequency $\\lambda$ (normalized Laplacian)")
            ax.set_ylabel("response $(U^T T U)_{jj}$")
            ax.set_title(f"{title}, {h} x {w} {'torus' if self.periodic else 'grid'}")
            ax.legend(fontsize=8, ncol=2)
            figs[group] = fig
        return figs

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """:meth:`to_dict` as JSON text; with ``path`` also written there (atomically)."""
        return json_text(self.to_dict(), path)

    @classmethod
    def from_json(cls, source: Union[str, Path]) -> "Simulation":
        """A Simulation from :meth:`to_json` text or a ``curves.json`` path."""
        text = Path(source).read_text() if isinstance(source, Path) or not str(source).lstrip().startswith("{") else str(source)
        try:
            d = json.loads(text)
            curves = {group: d[group] for group, _ in _GROUPS if group in d}
            return cls(grid=tuple(d["grid"]), periodic=bool(d["periodic"]), curves=curves)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise FreqkitError(
                f"not a freqkit simulate curves file ({type(err).__name__}: {err}); pass curves.json of freqkit simulate"
            ) from None

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "Simulation":
        """The Simulation that :meth:`save` wrote into ``folder`` (its ``curves.json``)."""
        return cls.from_json(Path(folder) / "curves.json")

    def save(self, folder: Union[str, Path]) -> list[Path]:
        """Write one PNG per figure and ``curves.json`` into ``folder``; return the paths written."""
        out = check_writable_dir(folder, "out")
        written = render.write_pngs([(f"{stem}.png", render.figure_png(fig)) for stem, fig in self.plot().items()], out)
        self.to_json(out / "curves.json")
        return written + [out / "curves.json"]

    def _repr_html_(self) -> str:
        rows = [[name, f"{dc:.3f}", f"{hi:.4f}"] for name, dc, hi in self.summary()]
        h, w = self.grid
        return render.fragment(
            f"graph-spectral simulation, {h} x {w} {'torus' if self.periodic else 'grid'}",
            render.table(["mixer", "DC", "high band |r| (lambda > 1)"], rows),
            self.plot(),
        )


def _curve(matrix, freqs, basis, bins: int) -> dict[str, list[float]]:
    from freqkit.spectral import graph as g

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


def simulate(
    size: Union[int, Sequence[int]] = (14, 14),
    *,
    windows: Optional[Sequence[Optional[int]]] = None,
    stencils: Sequence[str] = DEFAULT_STENCILS,
    attention: bool = False,
    periodic: bool = False,
    bins: int = 16,
    seed: int = 0,
) -> Simulation:
    """Responses of k x k window averages (``None`` = the full grid), stencils and optionally windowed attention.

    ``size``: grid N or (H, W), at most 4096 tokens (the Fourier basis is N x N). ``windows``: odd sizes or
    ``None`` for global averaging (default: 1, 3, ... below the grid side, and the full grid). ``stencils``:
    names from :data:`freqkit.spectral.graph.STENCILS`. ``attention``: softmax attention of seeded random
    tokens restricted to each window.
    """
    import torch

    from freqkit.spectral import graph as g

    dims = [size] if isinstance(size, int) else list(size)
    if len(dims) not in (1, 2):
        raise ParameterError("size", f"takes H W or one N, got {len(dims)} numbers; e.g. 14 14")
    h, w = (dims[0], dims[0]) if len(dims) == 1 else (dims[0], dims[1])
    if h < 2 or w < 2 or h * w > 4096:
        raise ParameterError("size", f"{h} {w}: use a grid of at least 2 x 2 and at most 4096 tokens (the basis is N x N)")
    if bins < 1:
        raise ParameterError("bins", f"must be >= 1, got {bins}")
    wins = g.default_windows(h, w) if windows is None else list(windows)
    for k in wins:
        if k is not None and (not isinstance(k, int) or k < 1 or k % 2 == 0):
            raise ParameterError("windows", f"{k!r} is not an odd window size or None (the full grid); e.g. [1, 3, 5, None]")
    if not wins:
        raise ParameterError("windows", "is empty; e.g. [1, 3, 5, None]")
    kernels = {}
    for name in stencils:
        try:
            kernels[name] = g.stencil(name)
        except FreqkitError as err:
            raise ParameterError("stencils", f"has {err}") from None
        if periodic and (kernels[name].shape[0] > h or kernels[name].shape[1] > w):
            raise ParameterError("size", f"{h} {w}: stencil {name} is larger than the torus; use a larger grid")

    freqs, basis = g.graph_fourier_basis(g.grid_laplacian(h, w, periodic))
    label = lambda k: "full" if k is None else f"k={k}"  # noqa: E731
    curves: dict[str, dict[str, dict[str, list[float]]]] = {
        "windows": {label(k): _curve(g.window_average(h, w, k, periodic), freqs, basis, bins) for k in wins},
        "stencils": {n: _curve(g.stencil_matrix(s, h, w, periodic), freqs, basis, bins) for n, s in kernels.items()},
    }
    if attention:
        gen = torch.Generator().manual_seed(seed)
        tokens = torch.randn(h * w, 16, generator=gen, dtype=torch.float64)
        curves["attention"] = {
            label(k): _curve(g.window_attention(tokens, (h, w), k, scale=1.0 / 16, periodic=periodic), freqs, basis, bins)
            for k in wins
        }
    return Simulation(grid=(h, w), periodic=bool(periodic), curves=curves)
