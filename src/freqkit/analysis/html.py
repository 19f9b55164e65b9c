"""One self-contained HTML page of a report: settings, per-model per-layer tables, figures as base64 PNG.

The page references nothing outside itself (no scripts, stylesheets or images by URL), so it can be
mailed or archived as a single file.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from freqkit.analysis.report import Report

__all__ = ["render_html", "write_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child,td.l{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}
"""

_CAPTIONS = {
    "layer_metrics.png": "Per-layer effective rank, token cosine similarity, high-frequency ratio and high-frequency dlog amplitude.",
    "cross_layer_similarity.png": "Cross-layer similarity: mean cosine between the same token at two layers.",
    "cka.png": "Linear CKA (Kornblith et al. 2019) between layers, and between the layers of two models, over the dataset: "
    "mini-batch unbiased HSIC (Nguyen et al. 2021) with the spatial tokens of each image as samples, finer grids average-pooled to the coarsest.",
    "spectral_curves.png": "Relative log amplitude (Park & Kim 2022) and radial log-amplitude profile per layer; darker = shallower.",
    "responses.png": "Attention responses per layer: local response log(1 + |F(W_q)|) (mean +- std over queries and heads) and global response |F(AV)| / |F(V)|.",
}
_PREFIX_CAPTIONS = {
    "spectra_": "Grid of per-layer 2-D log-amplitude spectra minus their DC value, one colour scale for all models.",
    "heads_": "Per-head heat maps (layer x head): local-response high-frequency share, attention entropy, mean attention distance "
    "in patches (Dosovitskiy et al. 2021, Fig. 7) and effective rank of the attention map.",
    "attinv_modulation": "AttInv modulation (FDAM supplementary, Fig. 7): the high-pass weight each AttInv layer applies at every "
    "position (mean over heads and channels of g_hf * Sh), upsampled and overlaid on the input.",
    "freqscale_gain": "FreqScale frequency modulation (FDAM supplementary, Fig. 8): the applied gain 1 + W per frequency, "
    "low frequencies at the centre, mean over channels and images (the _spread figure: its std over images).",
    "features": "One layer's feature map (channel-wise L2 norm of the RMS-normalised tokens) next to its centred "
    "log-amplitude spectrum, per model, one colour scale across models (FDAM supplementary, Fig. 9).",
    "spam_filters": "SPAM's spectral filters per stage: SPANet's fixed masks (one per lambda) and SPANetV2's learned "
    "spectral gains after the sigmoid.",
    "attinv_response": "Local frequency response of the attention kernel A, of its inversion I - A and of the learned combination "
    "at a high- and a low-weight position; a two-layer stack and synthetic band-pass / band-stop stacks (FDAM supplementary, Figs. 2-3, eq. 25).",
    "erf_": "Effective receptive field (Luo et al. 2016): mean |input gradient| of the centre unit of selected layers "
    "(each normalised to its maximum), and the radial profile of its log-amplitude spectrum.",
}


def _caption(name: str) -> str:
    if name in _CAPTIONS:
        return _CAPTIONS[name]
    return next((text for prefix, text in _PREFIX_CAPTIONS.items() if name.startswith(prefix)), name)


def _e(v: object) -> str:
    return html.escape(str(v))


def _num(v: object) -> str:
    if v is None:
        return "-"
    f = float(v)
    return f"{f:.4g}" if abs(f) >= 1e-3 or f == 0 else f"{f:.2e}"


def _kv_table(d: dict) -> str:
    rows = "".join(f"<tr><td class=l>{_e(k)}</td><td class=l>{_e(v)}</td></tr>" for k, v in d.items())
    return f"<table><tr><th>setting</th><th>value</th></tr>{rows}</table>"


def _layer_table(model) -> str:
    from freqkit.analysis.report import METRICS

    attn = model.has_attention
    head = ["layer", "grid", "C", "prefix"] + [METRICS[k][0] for k in METRICS]
    if attn:
        head += ["local DC", "local HF", "global HF"]
    rows = []
    for layer in model.layers:
        cells = [_e(layer.name), f"{layer.grid_size[0]}x{layer.grid_size[1]}", str(layer.channels), str(layer.num_prefix_tokens)]
        cells += [_num(getattr(layer, k)) for k in METRICS]
        if attn:
            lr = layer.local_response
            cells += [
                _num(lr["dc"]) if lr else "-",
                _num(lr["mean"][-1]) if lr else "-",
                _num(layer.global_response[-1]) if layer.global_response else "-",
            ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def render_html(report: "Report", pngs: Optional[list[tuple[str, bytes]]] = None) -> str:
    """The report as one HTML string; ``pngs`` = already rendered figures (name, bytes), else rendered here."""
    from freqkit import __version__
    from freqkit.analysis.report import METRICS

    if pngs is None:
        from freqkit.analysis.plots import rendered

        pngs = rendered(report)
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>freqkit report: {_e(', '.join(report.names))}</title><style>{_CSS}</style></head><body>",
        f"<h1>freqkit spectral report</h1><p class=note>freqkit {_e(__version__)}, report schema {report.schema_version}; models: {_e(', '.join(report.names))}</p>",
        "<h2>Settings</h2>",
        _kv_table(report.settings),
        "<h2>Metrics</h2><ul>" + "".join(f"<li><b>{_e(v[0])}</b>: {_e(v[1])}</li>" for v in METRICS.values()) + "</ul>",
    ]
    for m in report.models:
        parts.append(f"<h2>{_e(m.name)}</h2>")
        if m.info:
            parts.append(_kv_table(m.info))
        parts.append(_layer_table(m))
    parts.append("<h2>Figures</h2>")
    if report.methods is not None:
        from freqkit.analysis.methods import METHOD_FIGURES

        applies = report.methods.get("applies", [])
        skipped = [k for k in METHOD_FIGURES if k not in applies]
        parts.append(
            f"<p class=note>Method figures that apply to these models: {_e(', '.join(applies) or 'none')}"
            + (f"; not applicable (no such modules): {_e(', '.join(skipped))}" if skipped else "") + ".</p>"
        )
    for name, data in pngs:
        b64 = base64.b64encode(data).decode("ascii")
        caption = _caption(name)
        parts.append(f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{b64}'><figcaption>{_e(name)}: {_e(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: "Report", path: Path, pngs: Optional[list[tuple[str, bytes]]] = None) -> Path:
    """Write :func:`render_html` to ``path`` (atomically); returns the path."""
    from freqkit.analysis.report import _atomic_write

    return _atomic_write(path, render_html(report, pngs).encode("utf-8"))
