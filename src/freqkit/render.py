"""Shared rendering helpers for every result page: file-name slugs, figure -> PNG, and one HTML page shell.

`analysis` (spectral reports) and `experiment` (comparisons, simulations) both render through this module, so
every page freqkit writes looks the same and is self-contained (figures inline as base64 PNG, no URLs).
Depends only on the standard library, matplotlib (lazily) and `freqkit.io`.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "check_distinct_folders",
    "curve_figure",
    "escape",
    "figure_png",
    "figure_tag",
    "fragment",
    "kv_table",
    "page",
    "slug",
    "table",
    "write_pngs",
]

DPI = 110

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child,td.l{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
code{background:#f3f3f3;padding:1px 4px}
"""


def slug(name: str, default: str = "model") -> str:
    """A file-name-safe form of ``name``: runs of characters outside ``[A-Za-z0-9_.-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_.") or default


def check_distinct_folders(names: Iterable[str], param: str) -> None:
    """Refuse two names that :func:`slug` maps to one file or folder name (one would overwrite the other)."""
    from freqkit.errors import ParameterError

    seen: dict[str, str] = {}
    for name in names:
        s = slug(name)
        if s in seen and seen[s] != name:
            raise ParameterError(param, f"names {seen[s]!r} and {name!r} would share the folder / file name {s!r}; rename one")
        seen[s] = name


def escape(value: object) -> str:
    """HTML-escaped ``str(value)``."""
    return html.escape(str(value))


def figure_png(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes (its own dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_pngs(pngs: Iterable[tuple[str, bytes]], out_dir: str | Path) -> list[Path]:
    """Write (file name, PNG bytes) pairs under ``out_dir``, each atomically; returns the paths."""
    from freqkit.io import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_bytes(out / name, data) for name, data in pngs]


def figure_tag(name: str, png: bytes, caption: str = "") -> str:
    """One ``<figure>`` with the PNG inline (base64) and ``name: caption`` below it."""
    b64 = base64.b64encode(png).decode("ascii")
    text = f"{escape(name)}: {escape(caption)}" if caption else escape(name)
    return f"<figure><img alt='{escape(name)}' src='data:image/png;base64,{b64}'><figcaption>{text}</figcaption></figure>"


def kv_table(d: Mapping, key: str = "setting", value: str = "value") -> str:
    """A two-column HTML table of a mapping."""
    rows = "".join(f"<tr><td class=l>{escape(k)}</td><td class=l>{escape(v)}</td></tr>" for k, v in d.items())
    return f"<table><tr><th>{escape(key)}</th><th>{escape(value)}</th></tr>{rows}</table>"


def table(header: Iterable[object], rows: Iterable[Iterable[object]]) -> str:
    """An HTML table; cells are escaped."""
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def page(title: str, body: str | Iterable[str]) -> str:
    """A complete self-contained HTML page around ``body`` (already HTML), with the shared stylesheet."""
    content = body if isinstance(body, str) else "\n".join(body)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n{content}\n</body></html>\n"
    )


def fragment(title: str, body: str, figures: Mapping[str, Figure] | None = None) -> str:
    """An HTML fragment for a notebook cell (``_repr_html_``): a heading, ``body`` (HTML) and the figures inline as PNG."""
    figs = "".join(figure_tag(name, figure_png(fig)) for name, fig in (figures or {}).items())
    return f"<div><h3>{escape(title)}</h3>{body}{figs}</div>"


def curve_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    size: tuple[float, float] = (5.5, 3.6),
) -> Figure:
    """One line per name from (x values, y values), labelled and gridded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for name, (xs, ys) in curves.items():
        if len(xs):
            ax.plot(list(xs), list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
