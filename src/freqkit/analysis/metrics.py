"""Names and descriptions of the per-layer and per-head metrics of a report, and their display format.

Its own module so that the report object and its renderers (text table, figures, HTML) share one definition
without importing each other.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["METRICS", "HEAD_METRICS", "format_number", "layer_columns", "layer_cells"]

# per-layer scalar metric -> (short column name, description)
METRICS: dict[str, tuple[str, str]] = {
    "hf_ratio": ("HF ratio", "share of spectral energy above the cutoff radius"),
    "hf_log_amplitude": ("dlogA HF", "relative log amplitude at the highest frequency (Park & Kim 2022)"),
    "effective_rank": ("eff. rank", "effective rank of the (N, C) spatial-token matrix (Roy & Vetterli 2007)"),
    "cosine_similarity": ("cos sim", "mean pairwise |cosine| between spatial tokens (over-smoothing; Wang et al. 2022)"),
    "rank_collapse_residual": ("residual", "relative rank-collapse residual (Dong et al. 2021)"),
}

# per-head metric (key of LayerStats.heads) -> (title, description)
HEAD_METRICS: dict[str, tuple[str, str]] = {
    "hf_share": ("local-response HF share", "share of each query kernel's spectral energy above the cutoff radius"),
    "entropy": ("attention entropy (nats)", "mean over queries of the entropy of the attention row"),
    "distance": (
        "mean attention distance (patches)",
        "expected grid distance to the attended spatial keys (Dosovitskiy et al. 2021, Fig. 7)",
    ),
    "effective_rank": ("attention effective rank", "effective rank of the (N, N) attention map"),
}


def format_number(v: Any) -> str:
    """A metric value for tables: 4 significant digits, scientific below 1e-3, ``-`` for None, ``nan``."""
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "nan"
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def layer_columns(attention: bool) -> list[str]:
    """Column names of the per-layer metric cells (the attention response columns when ``attention``)."""
    return [METRICS[k][0] for k in METRICS] + (["local DC", "local HF", "global HF"] if attention else [])


def layer_cells(layer: Any, attention: bool) -> list[str]:
    """One layer's formatted metric cells, matching :func:`layer_columns` (``-`` where a response was not captured)."""
    cells = [format_number(getattr(layer, k)) for k in METRICS]
    if attention:
        lr, gr = layer.local_response, layer.global_response
        cells += [
            format_number(lr["dc"]) if lr else "-",
            format_number(lr["mean"][-1]) if lr else "-",
            format_number(gr[-1]) if gr else "-",
        ]
    return cells
