"""Matplotlib figures of the method-visualization data of :func:`freqkit.analysis.methods.method_figures_data`.

Object API only (``matplotlib.figure.Figure``, no pyplot state). File names start with the figure kind:

- ``attinv_modulation_<model>.png``: AttInv's high-pass weight per position, upsampled and overlaid on
  the input images, a few layers (FDAM supplementary, Fig. 7);
- ``freqscale_gain_<model>.png`` (and ``freqscale_gain_spread_<model>.png`` for image-dependent modes):
  FreqScale's gain per frequency, DC at the centre, one panel per module (Fig. 8);
- ``features.png``: per image and model, the feature map next to its log-amplitude spectrum, one colour
  scale per kind across models (Fig. 9);
- ``spam_filters_<model>.png``: SPANet's SPF masks or SPANetV2's learned gains per stage;
- ``attinv_response_<model>.png``: local responses of A, I - A and the learned combination at a high-
  and a low-weight position, a two-layer stack and synthetic band-pass / band-stop stacks (Figs. 2-3).
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from freqkit.render import DPI, slug

__all__ = ["plot_method_figures"]

_MAX_LAYERS = 6


def _upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (align_corners=False) of a (h, w) map to ``size``."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(grid, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _pick(n: int, k: int = _MAX_LAYERS) -> list[int]:
    """Up to k evenly spaced indices of n, the last one included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _short(name: str) -> str:
    """'blocks.3.attn.filter' -> 'blocks.3' (the part that tells the layer apart)."""
    m = re.match(r"(.*?\b(?:blocks|stages|layers)\.\d+(?:\.\d+)?)", name)
    return m.group(1) if m else name


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------ AttInv modulation
def _attinv_modulation(model: str, d: dict[str, Any]) -> Figure:
    images = np.asarray(d["images"], dtype=np.uint8)
    n = min(len(images), len(d["high"][0]))
    cols = _pick(len(d["layers"]))
    # photographs make large PNGs: a lower resolution keeps the HTML report light
    fig = Figure(figsize=(1.9 * (len(cols) + 1) + 0.6, 1.95 * n + 0.9), dpi=90, layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, len(cols) + 1, squeeze=False))
    size = images.shape[1:3]
    for c, li in enumerate(cols):
        maps = np.asarray(d["high"][li], dtype=np.float64)[:n]
        lo, hi = float(maps.min()), float(maps.max())
        im = None
        for r in range(n):
            ax = axes[r, c + 1]
            ax.imshow(images[r])
            im = ax.imshow(_upsample(maps[r], size), cmap="inferno", alpha=0.6, vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
            _off(ax)
        axes[0, c + 1].set_title(_short(d["layers"][li]), fontsize=9)
        cb = fig.colorbar(im, ax=axes[:, c + 1], location="bottom", shrink=0.9, aspect=12)
        cb.ax.tick_params(labelsize=7)
        cb.ax.xaxis.get_offset_text().set_fontsize(7)
    for r in range(n):
        axes[r, 0].imshow(images[r])
        _off(axes[r, 0])
    axes[0, 0].set_title("input", fontsize=9)
    fig.suptitle(
        f"{model}: AttInv high-pass weight per position (mean over channels of g_hf Sh; colour scale per layer)", fontsize=10
    )
    return fig


# ------------------------------------------------------------------------------------------ FreqScale gain
def _module_layout(names: list[str]) -> tuple[list[str], list[str]]:
    """(column keys = blocks, row keys = module roles) when names are '<block>.<role>', else one row."""
    blocks, roles = [], []
    for n in names:
        head, _, tail = n.rpartition(".")
        if head not in blocks:
            blocks.append(head)
        if tail not in roles:
            roles.append(tail)
    if len(blocks) * len(roles) != len(names) or len(roles) > 4:
        return names, [""]
    return blocks, roles


def _freqscale_grid(model: str, d: dict[str, Any], key: str, title: str, cmap: str, centred_at_one: bool) -> Figure:
    mods = d["modules"]
    blocks, roles = _module_layout([m["name"] for m in mods])
    cols = [blocks[i] for i in _pick(len(blocks), 12)]
    arrays = {m["name"]: np.asarray(m[key], dtype=np.float64) for m in mods if m.get(key) is not None}
    if centred_at_one:
        dev = max(float(np.abs(a - 1.0).max()) for a in arrays.values()) or 1e-12
        vmin, vmax = 1.0 - dev, 1.0 + dev
    else:
        vmin = min(float(a.min()) for a in arrays.values())
        vmax = max(float(a.max()) for a in arrays.values())
        vmax = vmax if vmax > vmin else vmin + 1e-12
    fig = Figure(figsize=(1.45 * len(cols) + 1.2, 1.55 * len(roles) + 1.0), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(roles), len(cols), squeeze=False))
    im = None
    for r, role in enumerate(roles):
        for c, block in enumerate(cols):
            ax = axes[r, c]
            name = f"{block}.{role}" if role else block
            a = arrays.get(name)
            _off(ax)
            if a is None:
                ax.set_visible(False)
                continue
            im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if r == 0:
                ax.set_title(_short(block) if role else _short(name), fontsize=8)
            if c == 0 and role:
                ax.set_ylabel(role, fontsize=8)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, location="right", shrink=0.85)
        cb.ax.tick_params(labelsize=7)
    mode = sorted({m["mode"] for m in mods})
    fig.suptitle(f"{model}: FreqScale {title} ({', '.join(mode)} mode; DC at the centre, mean over channels)", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ features
def _features(d: dict[str, Any]) -> Figure:
    models = d["models"]
    images = np.asarray(d["images"], dtype=np.uint8)
    n = min(len(images), *(len(d["map"][m]) for m in models))
    maps = {m: np.asarray(d["map"][m], dtype=np.float64)[:n] for m in models}
    specs = {m: np.asarray(d["spectrum"][m], dtype=np.float64)[:n] for m in models}
    mlo = min(float(a.min()) for a in maps.values())
    mhi = max(float(a.max()) for a in maps.values())
    slo = min(float(a.min()) for a in specs.values())
    shi = max(float(a.max()) for a in specs.values())
    ncols = 1 + 2 * len(models)
    fig = Figure(figsize=(1.9 * ncols + 0.4, 1.95 * n + 1.1), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, ncols, squeeze=False))
    im_map = im_spec = None
    for r in range(n):
        axes[r, 0].imshow(images[r])
        _off(axes[r, 0])
        for j, m in enumerate(models):
            a1, a2 = axes[r, 1 + 2 * j], axes[r, 2 + 2 * j]
            im_map = a1.imshow(maps[m][r], cmap="magma", vmin=mlo, vmax=mhi, interpolation="nearest")
            im_spec = a2.imshow(specs[m][r], cmap="viridis", vmin=slo, vmax=shi, interpolation="nearest")
            _off(a1)
            _off(a2)
            if r == 0:
                a1.set_title(f"{m}\nfeature map", fontsize=8)
                a2.set_title(f"{m}\nlog-amplitude spectrum", fontsize=8)
    axes[0, 0].set_title("input", fontsize=9)
    # the same scale under every model's pair of columns, so each colour bar sits below what it explains
    for j in range(len(models)):
        cb = fig.colorbar(im_map, ax=axes[:, 1 + 2 * j], location="bottom", shrink=0.9, aspect=15)
        cb.set_label("token RMS / image RMS", fontsize=7)
        cb.ax.tick_params(labelsize=7)
        cb = fig.colorbar(im_spec, ax=axes[:, 2 + 2 * j], location="bottom", shrink=0.9, aspect=15)
        cb.set_label("mean log |F|", fontsize=7)
        cb.ax.tick_params(labelsize=7)
    layers = ", ".join(
        f"{m}: level {d['layer'][m]}" + (f" (stride {d['stride'][m]})" if d["stride"].get(m) else "") for m in models
    )
    fig.suptitle(
        f"feature maps and centred log-amplitude spectra\n(one colour scale per kind across models; {layers})", fontsize=9
    )
    return fig


# ------------------------------------------------------------------------------------------ SPAM
def _crop(a: np.ndarray, half: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Central (2 half + 1)^2 window of a centred map (the whole map when smaller) and its top-left offset."""
    h, w = a.shape
    cy, cx = h // 2, w // 2
    y0, x0 = max(0, cy - half), max(0, cx - half)
    return a[y0 : min(h, cy + half + 1), x0 : min(w, cx + half + 1)], (y0 - cy, x0 - cx)


def _spam_figure(
    model: str, stages: list[dict[str, Any]], key: str, labels: list[str], title: str, crop: Optional[int]
) -> Figure:
    ncols = max(len(s[key]) for s in stages)
    fig = Figure(figsize=(1.9 * ncols + 1.2, 1.8 * len(stages) + 0.8), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(stages), ncols, squeeze=False))
    for r, s in enumerate(stages):
        arrs = [np.asarray(a, dtype=np.float64) for a in s[key]]
        lo = min(float(a.min()) for a in arrs)
        hi = max(float(a.max()) for a in arrs)
        im = None
        for c, a in enumerate(arrs):
            ax = axes[r, c]
            half = crop if crop is not None else max(a.shape)
            view, (oy, ox) = _crop(a, max(half, math.ceil(s.get("radius", 0)) + 3))
            im = ax.imshow(
                view,
                cmap="viridis",
                vmin=lo,
                vmax=hi if hi > lo else lo + 1e-12,
                interpolation="nearest",
                extent=(ox - 0.5, ox + view.shape[1] - 0.5, oy + view.shape[0] - 0.5, oy - 0.5),
            )
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(labels[c] if c < len(labels) else str(c), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"stage {s['stage']} ({s['size'][0]}x{s['size'][1]})", fontsize=8)
        cb = fig.colorbar(im, ax=axes[r, :], location="right", shrink=0.85)
        cb.ax.tick_params(labelsize=7)
    fig.suptitle(f"{model}: {title}", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------ AttInv response
def _centers(bins: int) -> list[float]:
    return [(k + 0.5) / bins for k in range(bins)]


def _attinv_response(model: str, d: dict[str, Any]) -> Figure:
    bins = d["bins"]
    x = _centers(bins)
    fig = Figure(figsize=(12.5, 9.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(3, 4)
    parts = (("attention", "A (attention)"), ("inversion", "I - A (inversion)"), ("combination", "learned combination"))
    for r, key in enumerate(("high", "low")):
        e = d["positions"][key]
        arrs = [np.asarray(e[p], dtype=np.float64) for p, _ in parts]
        vmax = max(float(a.max()) for a in arrs)
        for c, ((_, label), a) in enumerate(zip(parts, arrs)):
            ax = axes[r, c]
            im = ax.imshow(a, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            _off(ax)
            ax.set_title(f"|F| of {label}", fontsize=9)
        fig.colorbar(im, ax=axes[r, :3], location="right", shrink=0.8).ax.tick_params(labelsize=7)
        axes[r, 0].set_ylabel(f"{key}-weight token\n(row {e['row']}, col {e['col']})", fontsize=9)
        ax = axes[r, 3]
        for p, label in parts:
            ax.plot(x, e[p + "_profile"], marker="o", ms=3, label=label)
        ax.set_title(f"radial profile (low {e['low']:.3g}, high {e['high']:.3g})", fontsize=9)
        ax.set_xlabel("normalized radius", fontsize=8)
        ax.legend(fontsize=7)
    # weight map with the two positions
    ax = axes[2, 0]
    wmap = np.asarray(d["high_weight_map"], dtype=np.float64)
    im = ax.imshow(wmap, cmap="inferno", interpolation="nearest")
    for key, marker in (("high", "^"), ("low", "v")):
        e = d["positions"][key]
        ax.plot([e["col"]], [e["row"]], marker=marker, color="cyan", ms=8, mec="k")
    _off(ax)
    ax.set_title(f"{_short(d['layer'])}: high-pass weight\n(image 1; ^ high, v low)", fontsize=9)
    fig.colorbar(im, ax=ax, location="bottom", shrink=0.8).ax.tick_params(labelsize=7)
    ax = axes[2, 1]
    e = d["positions"]["high"]
    if "stack" in e and d.get("partner"):
        ax.plot(x, e["combination_profile"], marker="o", ms=3, label=_short(d["layer"]))
        ax.plot(x, e["stack"]["partner_profile"], marker="o", ms=3, label=_short(d["partner"]))
        ax.plot(x, e["stack"]["product_profile"], marker="o", ms=3, lw=2, label="stack (product)")
        ax.legend(fontsize=7)
        ax.set_title("two-layer stack at the high-weight token", fontsize=9)
    else:
        ax.set_visible(False)
    ax.set_xlabel("normalized radius", fontsize=8)
    syn = d["synthetic"]
    for ax, key, label in ((axes[2, 2], "band_pass", "band-pass"), (axes[2, 3], "band_stop", "band-stop")):
        s = syn[key]
        xs = _centers(syn["bins"])
        ax.plot(xs, s["first"], ls="--", label="layer 1")
        ax.plot(xs, s["second"], ls="--", label="layer 2")
        ax.plot(xs, s["stack"], lw=2, color="k", label="stack")
        ax.set_title(f"synthetic {label} stack (Gaussian A)", fontsize=9)
        ax.set_xlabel("normalized radius", fontsize=8)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{model}: local frequency responses of AttInv {_short(d['layer'])} (mean over heads, DC at the centre)", fontsize=10
    )
    return fig


# ------------------------------------------------------------------------------------------ entry point
def plot_method_figures(data: dict[str, Any]) -> dict[str, Figure]:
    """Figures of ``method_figures_data`` output, file name -> Figure, for the kinds listed in data["applies"]."""
    out: dict[str, Figure] = {}
    applies = data.get("applies", [])
    if "attinv_modulation" in applies:
        for model, d in data["attinv_modulation"].items():
            out[f"attinv_modulation_{slug(model)}.png"] = _attinv_modulation(model, d)
    if "freqscale_gain" in applies:
        for model, d in data["freqscale_gain"].items():
            if not d.get("modules"):
                continue
            out[f"freqscale_gain_{slug(model)}.png"] = _freqscale_grid(
                model, d, "mean", "gain 1 + W, mean over images", "RdBu_r", True
            )
            if any(m.get("std") is not None for m in d["modules"]):
                out[f"freqscale_gain_spread_{slug(model)}.png"] = _freqscale_grid(
                    model, d, "std", "gain spread (std over images)", "viridis", False
                )
    if "features" in applies:
        out["features.png"] = _features(data["features"])
    if "spam_filters" in applies:
        for model, d in data["spam_filters"].items():
            if d.get("spam"):
                labels = [f"lambda {lam:g}" for lam in d["spam"][0]["lambdas"]]
                out[f"spam_filters_{slug(model)}.png"] = _spam_figure(
                    model, d["spam"], "masks", labels, "SPAM spectral masks per stage (centre crop, signed frequency)", 6
                )
            if d.get("spamv2"):
                n = len(d["spamv2"][0]["gains"])
                labels = [f"scale {i + 1} (dwconv {3 + 2 * i}x{3 + 2 * i})" for i in range(n)]
                name = f"spam_filters_{slug(model)}" + ("_v2" if d.get("spam") else "") + ".png"
                out[name] = _spam_figure(
                    model,
                    d["spamv2"],
                    "gains",
                    labels,
                    "SPAM v2 learned spectral gains per stage (after the sigmoid, mean over channels and blocks)",
                    None,
                )
    if "attinv_response" in applies:
        for model, d in data["attinv_response"].items():
            out[f"attinv_response_{slug(model)}.png"] = _attinv_response(model, d)
    return out
