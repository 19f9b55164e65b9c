"""The results of :func:`freqkit.compare` as one object: summary over seeds, table, figures, HTML page, JSON.

:class:`Comparison` follows freqkit's result-object convention (``to_dict``, ``to_json(path=None)``, ``save`` /
``load``, ``table``, ``plot``, ``_repr_html_``); pages and figures go through :mod:`freqkit.render`, the same
helpers the analysis reports use.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from freqkit import render
from freqkit.errors import FreqkitError
from freqkit.io import atomic_write_text, check_writable_dir, json_text
from freqkit.limits import loads_json

__all__ = ["Comparison", "summarize", "format_table", "format_metrics", "merge_predictions", "render_html", "HEADLINE", "CURVES"]

SCHEMA_VERSION = 2
# headline metric per task (first column of the table, and the "delta vs baseline" column)
HEADLINE = {"segmentation": ("miou", "boundary_f1", "pixel_acc"), "classification": ("top1",)}
CURVES = ("hf_ratio", "cosine_similarity", "effective_rank")
SPECTRAL = (("hf_ratio", "high-frequency ratio per layer"), ("cosine_similarity", "token cosine similarity per layer"))


def _mean_spread(values: list[Optional[float]]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return float("nan"), float("nan")
    return statistics.fmean(clean), (statistics.stdev(clean) if len(clean) > 1 else 0.0)


@dataclass
class Comparison:
    """Results of :func:`compare`: ``summary`` (model -> metrics with mean, spread, per-seed values, curves), ``runs``, ``settings``."""

    settings: dict[str, Any]
    summary: dict[str, dict[str, Any]]
    runs: dict[str, list[dict[str, Any]]]
    predictions: Optional[dict[str, Any]] = None  # first seed's predictions on fixed validation images (prediction_panel_data)
    analysis: Any = field(default=None, repr=False)  # freqkit.Report of the first seed's models (not in the JSON)

    @property
    def task(self) -> str:
        """'segmentation' or 'classification'."""
        return self.settings["task"]

    def table(self) -> str:
        """Plain-text metrics table (percent; mean ± sample std over seeds)."""
        return format_table(self.summary, self.task)

    def plot(self) -> dict[str, Any]:
        """Matplotlib figures by file stem: ``spectral`` (per-layer curves), ``loss`` (training loss), ``over_training``
        (each layer's hf_ratio and token similarity against the step, from the runs' monitor) and
        ``predictions`` (segmentation panels, or ``predictions_confusion`` matrices for classification)."""
        figs = _figures(self.runs)
        if self.predictions:
            from freqkit.analysis.predictions import plot_predictions

            figs.update({name.removesuffix(".png"): fig for name, fig in plot_predictions(self.predictions).items()})
        return figs

    def to_html(self) -> str:
        """The self-contained report page (figures inlined as base64 PNG)."""
        return render_html(self.settings, self.summary, self.runs, _pngs(self.plot()))

    def _repr_html_(self) -> str:
        return render.fragment(
            "freqkit compare", _body(self.settings, self.summary, self.runs, _pngs(self.plot()), link_analysis=False)
        )

    def to_dict(self) -> dict[str, Any]:
        """Every number: ``{"schema_version", "settings", "summary", "runs", "predictions"}``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "summary": self.summary,
            "runs": self.runs,
            "predictions": self.predictions,
        }

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """:meth:`to_dict` as JSON text; with ``path`` also written there (atomically)."""
        return json_text(self.to_dict(), path)

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "Comparison":
        """The Comparison that :meth:`save` wrote into ``folder`` (its ``results.json``)."""
        return cls.from_json(Path(folder) / "results.json")

    @classmethod
    def from_json(cls, source: Union[str, Path]) -> "Comparison":
        """A Comparison from :meth:`to_json` text or a ``results.json`` path."""
        text = Path(source).read_text() if isinstance(source, Path) or not str(source).lstrip().startswith("{") else str(source)
        try:
            d = loads_json(text, "the compare results")
            return cls(settings=d["settings"], summary=d["summary"], runs=d["runs"], predictions=d.get("predictions"))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise FreqkitError(
                f"not a freqkit compare results file ({type(err).__name__}: {err}); pass results.json of freqkit compare"
            ) from None

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``results.json``, ``spectral.png``, ``loss.png``, ``report.html`` (and ``analysis/``) into ``folder``."""
        out = Path(folder)
        check_writable_dir(out, "out")
        if self.analysis is not None:
            self.analysis.save(out / "analysis")
        self.to_json(out / "results.json")
        pngs = _pngs(self.plot())
        render.write_pngs(pngs, out)
        atomic_write_text(out / "report.html", render_html(self.settings, self.summary, self.runs, pngs))
        return out / "report.html"


def format_metrics(metrics: Mapping[str, float]) -> str:
    """'miou 0.412  boundary_f1 0.301 ...' with the headline metrics first."""
    order = ["top1", "miou", "boundary_f1", "pixel_acc", "loss"]
    keys = [k for k in order if k in metrics] + sorted(
        k for k in metrics if k not in order and isinstance(metrics[k], (int, float))
    )
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def _pngs(figures: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    return [(f"{stem}.png", render.figure_png(fig)) for stem, fig in figures.items()]


def summarize(runs: dict[str, list[dict[str, Any]]], task: str) -> dict[str, dict[str, Any]]:
    """Per model: mean and spread of every metric over seeds, timing, parameters, mean spectral curves."""
    out: dict[str, dict[str, Any]] = {}
    base = None
    for name, rs in runs.items():
        metric_names = sorted({k for r in rs for k in r["metrics"]})
        row: dict[str, Any] = {"seeds": len(rs), "parameters": rs[0]["parameters"]}
        for k in metric_names:
            mu, sd = _mean_spread([r["metrics"].get(k) for r in rs])
            row[k] = {"mean": mu, "std": sd, "values": [r["metrics"].get(k) for r in rs]}
        row["seconds_per_step"] = _mean_spread([r["seconds_per_step"] for r in rs])[0]
        row["seconds"] = sum(r["seconds"] for r in rs)
        for key in CURVES:
            curves = [r[key] for r in rs if r[key] is not None]
            row[key] = [statistics.fmean(v) for v in zip(*curves)] if curves else []
        if base is None:
            base = row
        for k in HEADLINE[task]:
            if k in row and k in base:
                row[k]["delta"] = row[k]["mean"] - base[k]["mean"]
        out[name] = row
    return out


def _fmt_ms(d: dict[str, Any], seeds: int) -> str:
    if seeds > 1:
        return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"
    return f"{100 * d['mean']:.2f}"


def format_table(summary: dict[str, dict[str, Any]], task: str) -> str:
    """Plain-text metrics table (percent; mean ± sample std over seeds)."""
    cols = [k for k in HEADLINE[task]]
    head = ["model"] + [f"{c} %" for c in cols] + [f"d{cols[0]}", "params", "ms/step"]
    rows = []
    for name, row in summary.items():
        rows.append(
            [name]
            + [_fmt_ms(row[c], row["seeds"]) if c in row else "-" for c in cols]
            + [
                f"{100 * row[cols[0]].get('delta', 0):+.2f}" if cols[0] in row else "-",
                f"{row['parameters'] / 1e6:.2f}M",
                f"{1000 * row['seconds_per_step']:.0f}",
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _figures(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Figures: spectral curves per layer (mean over seeds, min..max band) and training loss, one line per model."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 3.8), dpi=render.DPI, layout="constrained")
    axes = fig.subplots(1, len(SPECTRAL))
    for ax, (key, title) in zip(axes, SPECTRAL):
        for name, rs in runs.items():
            curves = [r[key] for r in rs if r[key] is not None]
            if not curves:
                continue
            layers = list(range(1, len(curves[0]) + 1))
            mean = [statistics.fmean(v) for v in zip(*curves)]
            (line,) = ax.plot(layers, mean, marker="o", ms=4, label=name)
            if len(curves) > 1:
                ax.fill_between(
                    layers, [min(v) for v in zip(*curves)], [max(v) for v in zip(*curves)], color=line.get_color(), alpha=0.2
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    losses = {}
    for name, rs in runs.items():
        steps = [h["step"] for h in rs[0]["history"]]
        losses[name] = (
            steps,
            [statistics.fmean(v) for v in zip(*[[h["loss"] for h in r["history"]] for r in rs])] if steps else [],
        )
    from freqkit.monitor import over_training_figure

    over = over_training_figure(runs)
    return {
        "spectral": fig,
        "loss": render.curve_figure(losses, "step", "training loss (mean over seeds)"),
        **({"over_training": over} if over is not None else {}),
    }


def merge_predictions(acc: Optional[dict[str, Any]], one: dict[str, Any]) -> dict[str, Any]:
    """Panel data of several models computed one model at a time: per-model entries gathered, shared ones kept."""
    if acc is None:
        return one
    acc["models"] = acc["models"] + one["models"]
    for key, value in one.items():
        if isinstance(value, dict) and isinstance(acc.get(key), dict):
            acc[key].update(value)
    return acc


def _body(
    settings: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
    figures: list[tuple[str, bytes]],
    link_analysis: bool = True,
) -> str:
    """The report's HTML body: call, metrics table, figures, predictions, per-layer table, settings."""
    e = render.escape
    task = settings["task"]
    cols = list(HEADLINE[task])
    seeds = len(settings["seeds"])
    spread = "mean ± sample std over seeds" if seeds > 1 else "one seed"
    head = (
        ["model"]
        + [f"{c} (%)" for c in cols]
        + [f"Δ {cols[0]} vs {settings['models'][0]}", "params", "train s/step", f"per-seed {cols[0]}"]
    )
    rows = []
    for name, row in summary.items():
        delta = row[cols[0]].get("delta") if cols[0] in row else None
        per_seed = ", ".join(f"{100 * v:.2f}" for v in row[cols[0]]["values"]) if cols[0] in row else "-"
        rows.append(
            [name]
            + [_fmt_ms(row[c], row["seeds"]) if c in row else "-" for c in cols]
            + [
                "-" if delta is None else f"{100 * delta:+.2f}",
                f"{row['parameters'] / 1e6:.3f} M",
                f"{row['seconds_per_step']:.3f}",
                per_seed,
            ]
        )
    layer_rows = [
        [name, i + 1, f"{hf:.4f}", f"{cs:.4f}", f"{er:.2f}"]
        for name, row in summary.items()
        for i, (hf, cs, er) in enumerate(zip(row["hf_ratio"], row["cosine_similarity"], row["effective_rank"]))
    ]
    imgs = "".join(render.figure_tag(n, b) for n, b in figures if not n.startswith("predictions"))
    pred_imgs = "".join(render.figure_tag(n, b) for n, b in figures if n.startswith("predictions"))
    pred_note = (
        "Four fixed validation images: the image, the ground truth and each model's prediction (first seed), one palette. "
        "White: true boundary pixels with no predicted boundary nearby (missed); black: predicted boundary pixels with no "
        "true boundary nearby (spurious); the tolerance is boundary F1's. Grey: unlabelled."
        if task == "segmentation"
        else "Confusion matrix per model (first seed) over the validation images: rows the true class, columns the prediction."
    )
    predictions_html = f"<h2>Predictions</h2><p class=note>{e(pred_note)}</p>{pred_imgs}" if pred_imgs else ""
    metric_note = (
        "mIoU: torchmetrics MulticlassJaccardIndex (macro over classes present, ignore_index 255); boundary F1: class-agnostic "
        "label boundaries matched within 0.75% of the image diagonal (at least 1 px), micro-averaged over the validation set; "
        "pixel accuracy over non-ignored pixels."
        if task == "segmentation"
        else "top-1 accuracy over the validation split."
    )
    analysis = (
        ' Full diagnostics of the first seed: <a href="analysis/report.html">analysis/report.html</a>.' if link_analysis else ""
    )
    return f"""<p><code>{e(settings.get("call", ""))}</code></p>
<p>{e(task)} on <b>{e(settings["data"])}</b>, {settings["steps"]} steps per run, seeds {e(str(settings["seeds"]))}; {spread}.
Spectral curves: <code>freqkit.analyze</code> on the trained backbone, {settings["analyze_images"]} fixed validation images
(mean over seeds; band = min..max over seeds).{analysis}</p>
<div class="row">
<div><h2>Metrics</h2>
{render.table(head, rows)}
<p class=note style="max-width:560px">{e(metric_note)} Small-scale CPU runs: differences within the spread over seeds are not evidence.</p>
</div>
<div><h2>Spectral diagnostics</h2>{imgs}</div>
</div>
{predictions_html}
<h2>Per-layer values (mean over seeds)</h2>
{render.table(["model", "block", "HF ratio", "token cos sim", "eff. rank"], layer_rows)}
<h2>Settings</h2>{render.kv_table(settings)}"""


def render_html(
    settings: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
    figures: list[tuple[str, bytes]],
) -> str:
    """One self-contained HTML page: settings, metrics table, figures, per-layer table."""
    return render.page("freqkit compare", "<h1>freqkit compare</h1>\n" + _body(settings, summary, runs, figures))
