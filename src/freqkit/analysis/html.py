"""One self-contained HTML page of a report: settings, per-model per-layer tables, figures as base64 PNG.

The page references nothing outside itself (no scripts, stylesheets or images by URL), so it can be
mailed or archived as a single file.
"""

from __future__ import annotations

from typing import Any, Optional

from freqkit.analysis.metrics import METRICS, layer_cells, layer_columns
from freqkit.render import escape, figure_tag, kv_table, page, table

__all__ = ["render_body", "render_html"]

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


def _layer_table(model: Any) -> str:
    attn = model.has_attention
    head = ["layer", "grid", "C", "prefix"] + layer_columns(attn)
    rows = [
        [layer.name, f"{layer.grid_size[0]}x{layer.grid_size[1]}", str(layer.channels), str(layer.num_prefix_tokens)]
        + layer_cells(layer, attn)
        for layer in model.layers
    ]
    return table(head, rows)


def render_body(report: Any, pngs: Optional[list[tuple[str, bytes]]] = None) -> str:
    """The page's content (no document shell): settings, tables, figures; ``pngs`` = already rendered (name, bytes), else rendered here."""
    from freqkit import __version__

    if pngs is None:
        from freqkit.analysis.plots import rendered

        pngs = rendered(report)
    parts = [
        f"<h1>freqkit spectral report</h1><p class=note>freqkit {escape(__version__)}, report schema {report.schema_version}; "
        f"models: {escape(', '.join(report.names))}</p>",
        "<h2>Settings</h2>",
        kv_table(report.settings),
        "<h2>Metrics</h2><ul>" + "".join(f"<li><b>{escape(v[0])}</b>: {escape(v[1])}</li>" for v in METRICS.values()) + "</ul>",
    ]
    for m in report.models:
        parts.append(f"<h2>{escape(m.name)}</h2>")
        if m.info:
            parts.append(kv_table(m.info))
        parts.append(_layer_table(m))
    parts.append("<h2>Figures</h2>")
    if report.methods is not None:
        from freqkit.analysis.methods import METHOD_FIGURES

        applies = report.methods.get("applies", [])
        skipped = [k for k in METHOD_FIGURES if k not in applies]
        parts.append(
            f"<p class=note>Method figures that apply to these models: {escape(', '.join(applies) or 'none')}"
            + (f"; not applicable (no such modules): {escape(', '.join(skipped))}" if skipped else "")
            + ".</p>"
        )
    parts += [figure_tag(name, data, _caption(name)) for name, data in pngs]
    return "\n".join(parts)


def render_html(report: Any, pngs: Optional[list[tuple[str, bytes]]] = None) -> str:
    """The report as one self-contained HTML page (the shared page shell around :func:`render_body`)."""
    return page(f"freqkit report: {', '.join(report.names)}", render_body(report, pngs))
