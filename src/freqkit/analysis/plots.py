"""Matplotlib figures of a :class:`~freqkit.analysis.report.Report` (Agg canvas, no pyplot state).

- ``layer_metrics.png``: effective rank, token cosine similarity, high-frequency ratio and
  high-frequency dlog amplitude per layer, one line per model;
- ``cross_layer_similarity.png``: the L x L cross-layer similarity heat map of each model;
- ``cka.png``: the L x L linear CKA matrix of each model and the L_a x L_b matrix of each pair of models;
- ``spectra_<model>.png``: the grid of per-layer 2-D log-amplitude spectra of each model;
- ``spectral_curves.png``: relative log amplitude and radial spectrum profile per layer;
- ``responses.png`` (attention captured): local response (mean +- std over queries and heads) and
  global response radial curves per layer;
- ``heads_<model>.png`` (attention captured): layer x head heat maps of the local-response HF share,
  attention entropy, mean attention distance and attention effective rank;
- ``erf_<model>.png`` (receptive fields computed): the effective receptive field of each selected
  layer and the radial profiles of their log-amplitude spectra.
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from freqkit.analysis.metrics import HEAD_METRICS
from freqkit.render import DPI, figure_png, slug

__all__ = ["figures", "rendered"]


def _depth_colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


def _bin_centers(bins: int) -> list[float]:
    return [(k + 0.5) / bins for k in range(bins)]


def _layer_metrics(report: Any) -> Figure:
    panels = [
        ("effective_rank", "effective rank"),
        ("cosine_similarity", "token cosine similarity"),
        ("hf_ratio", f"high-frequency ratio (rho > {report.settings.get('cutoff', 0.5)})"),
        ("hf_log_amplitude", "high-frequency dlog amplitude"),
    ]
    fig = Figure(figsize=(10, 7.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, panels):
        for m in report.models:
            ys = m.series(key)
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3.5, label=m.name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("per-layer diagnostics", fontsize=11)
    return fig


def _cross_layer(report: Any) -> Figure | None:
    models = [m for m in report.models if m.cross_layer_similarity is not None]
    if not models:
        return None
    n = len(models)
    fig = Figure(figsize=(4.4 * n + 0.8, 4.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    lo = min(0.0, min(min(row) for m in models for row in m.cross_layer_similarity))
    im = None
    for ax, m in zip(axes, models):
        mat = m.cross_layer_similarity
        size = len(mat)
        im = ax.imshow(mat, vmin=lo, vmax=1.0, cmap="magma", origin="upper")
        ticks = list(range(size))
        labels = [str(i + 1) for i in ticks]
        ax.set_xticks(ticks, labels, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
        if size <= 14:
            for i in range(size):
                for j in range(size):
                    ax.text(
                        j, i, f"{mat[i][j]:.2f}", ha="center", va="center", fontsize=5.5, color="w" if mat[i][j] < 0.6 else "k"
                    )
        ax.set_title(m.name, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=list(axes), shrink=0.85, label="mean token cosine")
    fig.suptitle("cross-layer similarity", fontsize=11)
    return fig


def _relative_spectrum(spec: list[list[float]]) -> list[list[float]]:
    """A centred (H, W) log-amplitude spectrum minus its DC value (2-D relative log amplitude)."""
    h, w = len(spec), len(spec[0])
    dc = spec[h // 2][w // 2]
    return [[v - dc for v in row] for row in spec]


def _spectra(report: Any) -> list[tuple[str, Figure]]:
    out = []
    rel = {id(layer): _relative_spectrum(layer.spectrum) for m in report.models for layer in m.layers}
    values = sorted(v for r in rel.values() for row in r for v in row)
    if not values:
        return out
    # one colour scale for every panel of every model (1st percentile .. max), so figures compare
    vmin, vmax = values[int(0.01 * (len(values) - 1))], max(0.0, values[-1])
    for m in report.models:
        n = len(m.layers)
        cols = min(6, n)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(1.9 * cols + 0.9, 1.95 * rows + 0.5), dpi=DPI, layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        im = None
        for k, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= n:
                ax.axis("off")
                continue
            layer = m.layers[k]
            im = ax.imshow(rel[id(layer)], cmap="inferno", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(f"({chr(97 + k) if k < 26 else k + 1}) {layer.name}", fontsize=7)
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="log amplitude - DC")
        fig.suptitle(f"{m.name}: 2-D spectra of layer outputs relative to DC (centred)", fontsize=10)
        out.append((f"spectra_{slug(m.name)}.png", fig))
    return out


def _curves(report: Any) -> Figure:
    n = len(report.models)
    fig = Figure(figsize=(4.2 * n + 0.6, 6.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for j, m in enumerate(report.models):
        colors = _depth_colors(len(m.layers))
        ax_rla, ax_rad = axes[0, j], axes[1, j]
        for layer, c in zip(m.layers, colors):
            rla = layer.relative_log_amplitude
            xs = [i / max(1, len(rla) - 1) for i in range(len(rla))]
            ax_rla.plot(xs, rla, color=c, lw=1.2)
            prof = layer.radial_profile
            ax_rad.plot(_bin_centers(len(prof)), prof, color=c, lw=1.2)
        ax_rla.set_title(f"{m.name}: relative log amplitude", fontsize=9)
        ax_rla.set_xlabel("frequency (0 = DC, 1 = corner, x pi)")
        ax_rla.set_ylabel("dlog amplitude")
        ax_rad.set_title(f"{m.name}: radial spectrum", fontsize=9)
        ax_rad.set_xlabel("normalized radius rho (1 = Nyquist)")
        ax_rad.set_ylabel("mean log amplitude")
        for ax in (ax_rla, ax_rad):
            ax.grid(alpha=0.3)
        _depth_bar(fig, [ax_rla, ax_rad], len(m.layers))
    return fig


def _depth_bar(fig: Figure, axes, n: int) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    sm = ScalarMappable(norm=Normalize(1, max(2, n)), cmap=colormaps["viridis"])
    bar = fig.colorbar(sm, ax=axes, shrink=0.7, label="layer")
    bar.set_ticks(list(range(1, n + 1, max(1, math.ceil(n / 8)))))


def _responses(report: Any) -> Figure | None:
    models = [m for m in report.models if m.has_attention]
    if not models:
        return None
    n = len(models)
    fig = Figure(figsize=(4.2 * n + 0.6, 6.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for j, m in enumerate(models):
        layers = [layer for layer in m.layers if layer.local_response is not None]
        colors = _depth_colors(len(layers))
        ax_l, ax_g = axes[0, j], axes[1, j]
        for layer, c in zip(layers, colors):
            mean, std = layer.local_response["mean"], layer.local_response["std"]
            xs = _bin_centers(len(mean))
            ax_l.plot(xs, mean, color=c, lw=1.2)
            ax_l.fill_between(xs, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)], color=c, alpha=0.08)
            if layer.global_response is not None:
                ax_g.plot(_bin_centers(len(layer.global_response)), layer.global_response, color=c, lw=1.2)
        ax_l.set_title(f"{m.name}: local response log(1+|F(W)|)", fontsize=9)
        ax_l.set_ylabel("mean +- std over queries, heads")
        ax_g.set_title(f"{m.name}: global response |F(AV)| / |F(V)|", fontsize=9)
        ax_g.axhline(1.0, color="0.5", lw=0.8, ls="--")
        for ax in (ax_l, ax_g):
            ax.set_xlabel("normalized radius rho (1 = Nyquist)")
            ax.grid(alpha=0.3)
        _depth_bar(fig, [ax_l, ax_g], len(layers))
    return fig


def _heatmap(ax, mat, xlabels, ylabels, cmap="magma", vmin=None, vmax=None, annotate=True):
    im = ax.imshow(mat, cmap=cmap, vmin=vmin, vmax=vmax, origin="upper", aspect="auto")
    ax.set_xticks(list(range(len(xlabels))), xlabels, fontsize=7)
    ax.set_yticks(list(range(len(ylabels))), ylabels, fontsize=7)
    if annotate and len(mat) <= 14 and len(mat[0]) <= 14:
        lo = min(min(r) for r in mat) if vmin is None else vmin
        hi = max(max(r) for r in mat) if vmax is None else vmax
        mid = lo + 0.6 * (hi - lo)
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color="w" if v < mid else "k",
                )
    return im


def _cka(report: Any) -> Figure | None:
    panels = [(m.name, m.cka, len(m.cka), len(m.cka)) for m in report.models if m.cka is not None]
    panels += [
        (f"{p['a']} vs {p['b']}", p["matrix"], len(p["matrix"]), len(p["matrix"][0])) for p in report.model_cka if p["matrix"]
    ]
    if not panels:
        return None
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.4 * cols + 0.8, 4.2 * rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    im = None
    for ax, (title, mat, r, c) in zip(axes, panels):
        im = _heatmap(ax, mat, [str(j + 1) for j in range(c)], [str(i + 1) for i in range(r)], vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer" if " vs " not in title else f"layer of {title.split(' vs ')[1]}")
        ax.set_ylabel("layer" if " vs " not in title else f"layer of {title.split(' vs ')[0]}")
    for ax in axes[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=list(axes[:n]), shrink=0.85, label="linear CKA")
    fig.suptitle("linear CKA over the dataset (tokens as samples)", fontsize=11)
    return fig


def _heads(report: Any) -> list[tuple[str, Figure]]:
    out = []
    for m in report.models:
        layers = [layer for layer in m.layers if layer.heads is not None]
        if not layers:
            continue
        fig = Figure(figsize=(10, 1.0 + 0.32 * len(layers) * 2 + 1.2), dpi=DPI, layout="constrained")
        axes = fig.subplots(2, 2).ravel()
        ylabels = [layer.name for layer in layers]
        for ax, (key, (title, _)) in zip(axes, HEAD_METRICS.items()):
            mat = [layer.heads[key] for layer in layers]
            width = max(len(r) for r in mat)
            mat = [r + [float("nan")] * (width - len(r)) for r in mat]
            im = _heatmap(ax, mat, [str(h) for h in range(width)], ylabels, cmap="viridis")
            fig.colorbar(im, ax=ax, shrink=0.9)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("head")
        fig.suptitle(f"{m.name}: per-head attention maps", fontsize=10)
        out.append((f"heads_{slug(m.name)}.png", fig))
    return out


def _erf(report: Any) -> list[tuple[str, Figure]]:
    out = []
    for m in report.models:
        layers = [layer for layer in m.layers if layer.erf is not None]
        if not layers:
            continue
        n = len(layers)
        fig = Figure(figsize=(2.3 * n + 3.8, 2.9), dpi=DPI, layout="constrained")
        axes = fig.subplots(1, n + 1, squeeze=False, width_ratios=[1] * n + [1.6])[0]
        colors = _depth_colors(n)
        for k, (ax, layer) in enumerate(zip(axes, layers)):
            mat = layer.erf["map"]
            top = max(max(r) for r in mat) or 1.0
            ax.imshow([[v / top for v in r] for r in mat], cmap="inferno", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(layer.name, fontsize=8, color=colors[k])
            prof = layer.erf["radial_spectrum"]
            axes[-1].plot(_bin_centers(len(prof)), prof, color=colors[k], lw=1.3, label=layer.name)
        axes[-1].set_title("radial spectrum of the ERF", fontsize=9)
        axes[-1].set_xlabel("normalized radius rho (1 = Nyquist)")
        axes[-1].set_ylabel("mean log amplitude")
        axes[-1].grid(alpha=0.3)
        axes[-1].legend(fontsize=6)
        fig.suptitle(f"{m.name}: effective receptive field (|d centre unit / d input|, max = 1)", fontsize=10)
        out.append((f"erf_{slug(m.name)}.png", fig))
    return out


def figures(report: Any) -> list[tuple[str, Figure]]:
    """Every figure of ``report`` as (file name, matplotlib Figure), in display order."""
    out: list[tuple[str, Figure]] = [("layer_metrics.png", _layer_metrics(report))]
    cross = _cross_layer(report)
    if cross is not None:
        out.append(("cross_layer_similarity.png", cross))
    cka = _cka(report)
    if cka is not None:
        out.append(("cka.png", cka))
    out += _spectra(report)
    out.append(("spectral_curves.png", _curves(report)))
    resp = _responses(report)
    if resp is not None:
        out.append(("responses.png", resp))
    out += _heads(report)
    out += _erf(report)
    if report.methods:
        from freqkit.analysis.methods.plots import plot_method_figures

        out += list(plot_method_figures(report.methods).items())
    return out


def rendered(report: Any) -> list[tuple[str, bytes]]:
    """Every figure of ``report`` as (file name, PNG bytes)."""
    return [(name, figure_png(fig)) for name, fig in figures(report)]
