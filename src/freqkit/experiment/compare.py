"""Compare models: train each over seeds, evaluate, diagnose, and gather it all in one :class:`Comparison`.

    cmp = freqkit.compare(["vit_mini", "vit_mini+fdam"], data="shapes", steps=500, seeds=(0, 1, 2), out="cmp/")
    print(cmp.table()); cmp.save("cmp/")            # report.html, results.json, figures, analysis/

For every model and seed: :func:`freqkit.train`, evaluation on the validation split, and
:func:`freqkit.analyze` of the trained backbone over a fixed batch of validation images. The
summary gives every metric's mean, sample standard deviation and per-seed values, and each model's
per-layer spectral curves (mean over seeds). ``freqkit compare`` is this function on the command line.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from freqkit.errors import FreqkitError, ParameterError
from freqkit.limits import loads_json
from freqkit.render import check_distinct_folders
from freqkit.io import RunLock, atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable_dir

__all__ = ["compare", "Comparison", "parse_seeds", "DEFAULT_MODELS", "DEFAULT_STEPS"]

DEFAULT_MODELS = ("vit_mini", "vit_mini+fdam")
DEFAULT_STEPS = 500
SCHEMA_VERSION = 2
# headline metric per task (first column of the table, and the "delta vs baseline" column)
HEADLINE = {"segmentation": ("miou", "boundary_f1", "pixel_acc"), "classification": ("top1",)}
CURVES = ("hf_ratio", "cosine_similarity", "effective_rank")
SPECTRAL = (("hf_ratio", "high-frequency ratio per layer"), ("cosine_similarity", "token cosine similarity per layer"))
# TrainConfig fields that compare sets itself (per model and seed, or from its own arguments)
_OWN_FIELDS = ("model", "data", "steps", "seed", "out", "resume", "overwrite")
# settings that define a run: a finished run is reused by resume only when all agree
_RUN_KEYS = ("model", "data", "steps", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio",
             "layer_decay", "freq_lr_mult", "clip_grad", "amp", "seed", "drop_path", "head_channels")
# later settings: a run written before they existed had their defaults
_LATER_RUN_KEYS = ("global_batch", "beta1", "beta2", "warmup_start_ratio", "crop_size", "img_scale", "head_norm", "head_dropout",
                   "aux_channels", "aux_weight", "init", "eval_mode", "eval_flip", "eval_scales")

ModelFactory = Callable[[], Any]


def parse_seeds(value: Union[int, str, Sequence[int]]) -> list[int]:
    """Seeds from a count (3 -> [0, 1, 2]), a comma list ('0,5,7'; '4,' -> [4]) or a sequence of ints."""
    given = value
    try:
        if isinstance(value, str):
            if "," in value:
                seeds = [int(s) for s in value.split(",") if s.strip()]
            else:
                value = int(value)
        if isinstance(value, int):
            if value < 1:
                raise ValueError
            seeds = list(range(value))
        elif not isinstance(value, str):
            seeds = [int(s) for s in value]
    except (TypeError, ValueError):
        raise ParameterError("seeds", f"{given!r} is not a count N >= 1 or a list of integers such as 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParameterError("seeds", f"{given!r}: list each seed once")
    return seeds


def _slug(name: str) -> str:
    # render.slug strips leading / trailing dots too: '..' or '../x' never leaves out/runs/
    from freqkit.render import slug

    return slug(name)


def _mean_spread(values: list[Optional[float]]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return float("nan"), float("nan")
    return statistics.fmean(clean), (statistics.stdev(clean) if len(clean) > 1 else 0.0)


def _fixed_images(dataset, count: int):
    """The first ``count`` validation images (B, 3, H, W) in [0, 1], the same for every model and seed."""
    import torch

    n = min(count, len(dataset))
    return torch.stack([dataset[i][0] for i in range(n)])


def _encoder(model):
    """The part of a trained model that ``analyze`` diagnoses: the backbone of a segmenter, the classifier itself."""
    return getattr(model, "encoder", model)


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
        """Matplotlib figures by file stem: ``spectral`` (per-layer curves), ``loss`` (training loss) and
        ``predictions`` (segmentation panels, or ``predictions_confusion`` matrices for classification)."""
        figs = _figures(self.runs)
        if self.predictions:
            from freqkit.analysis.predictions import plot_predictions

            figs.update({name.removesuffix(".png"): fig for name, fig in plot_predictions(self.predictions).items()})
        return figs

    def to_html(self) -> str:
        """The self-contained report page (figures inlined as base64 PNG)."""
        return render_html(self.settings, self.summary, self.runs, _pngs(self.plot()))

    def to_json(self) -> str:
        """Every number: ``{"schema_version", "settings", "summary", "runs"}``."""
        return json.dumps({"schema_version": SCHEMA_VERSION, "settings": self.settings, "summary": self.summary,
                           "runs": self.runs, "predictions": self.predictions}, indent=1)

    @classmethod
    def from_json(cls, source: Union[str, Path]) -> "Comparison":
        """A Comparison from :meth:`to_json` text or a ``results.json`` path."""
        text = Path(source).read_text() if isinstance(source, Path) or not str(source).lstrip().startswith("{") else str(source)
        try:
            d = loads_json(text, "the compare results")
            return cls(settings=d["settings"], summary=d["summary"], runs=d["runs"], predictions=d.get("predictions"))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise FreqkitError(f"not a freqkit compare results file ({type(err).__name__}: {err}); pass results.json of freqkit compare") from None

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``results.json``, ``spectral.png``, ``loss.png``, ``report.html`` (and ``analysis/``) into ``folder``."""
        out = Path(folder)
        check_writable_dir(out, "out")
        if self.analysis is not None:
            self.analysis.save(out / "analysis")
        atomic_write_text(out / "results.json", self.to_json())
        pngs = _pngs(self.plot())
        for name, png in pngs:
            atomic_write_bytes(out / name, png)
        atomic_write_text(out / "report.html", render_html(self.settings, self.summary, self.runs, pngs))
        return out / "report.html"


def _normalize_models(models: Union[Sequence[str], Mapping[str, Union[str, ModelFactory]]]) -> dict[str, Union[str, ModelFactory]]:
    if isinstance(models, str):
        models = [m for m in models.split(",")]
    if isinstance(models, Mapping):
        named = {str(k): v for k, v in models.items()}
    else:
        names = [str(m).strip() for m in models if str(m).strip()]
        if len(set(names)) != len(names):
            raise ParameterError("models", f"{list(models)!r} repeats a model; list each once")
        named = {m: m for m in names}
    if not named:
        raise ParameterError("models", "is empty; give model specs such as ['vit_mini', 'vit_mini+fdam']")
    check_distinct_folders(named, "models")
    return named


def _previous_run(run_dir: Path, cfg) -> Optional[dict[str, Any]]:
    """A finished run of ``cfg``'s settings in ``run_dir`` as {model, metrics, history, seconds, seconds_per_step}, else None."""
    from freqkit.experiment.runs import open_run

    if not all((run_dir / n).is_file() for n in ("config.json", "model.safetensors", "metrics.json")):
        return None
    run = open_run(run_dir)
    want = cfg.to_dict()
    defaults = type(cfg)().to_dict()
    if any(run.config.get(k, defaults[k]) != want[k] for k in _LATER_RUN_KEYS):
        return None
    if any(run.config.get(k) != want[k] for k in _RUN_KEYS) or any(
        want[k] is not None and run.config.get(k) != want[k] for k in ("task", "img_size", "num_classes")
    ):
        return None
    return {"model": run.model(), "metrics": run.metrics, "history": run.history, **run.timing}


def compare(
    models: Union[Sequence[str], Mapping[str, Union[str, ModelFactory]]] = DEFAULT_MODELS,
    *,
    data: Union[str, Mapping[str, Any]] = "shapes",
    steps: int = DEFAULT_STEPS,
    seeds: Union[int, str, Sequence[int]] = (0,),
    out: Union[str, Path, None] = None,
    resume: bool = False,
    analyze_images: int = 16,
    keep_checkpoints: bool = False,
    **train_options: Any,
) -> Comparison:
    """Train, evaluate and diagnose every model for every seed; return (and with ``out``, save) a :class:`Comparison`.

    ``models``: model specs (``"vit_mini+fdam"``), or a mapping name -> spec or name -> zero-argument callable
    that returns a fresh ``nn.Module`` (called once per seed, after seeding). ``data``: a data spec string, or
    ``{"train": Dataset, "val": Dataset}`` (items: image (3, H, W) in [0, 1], target; then ``task`` and
    ``num_classes`` go in ``train_options``). ``train_options``: any other :class:`freqkit.TrainConfig` field
    (``batch_size``, ``lr``, ``img_size``, ...). ``out``: the folder for runs and report (``None``: a temporary
    folder, nothing kept). ``resume``: reuse finished runs of the same settings found in ``out/runs``.
    """
    import dataclasses

    import torch

    from freqkit.analysis import Report, analyze
    from freqkit.analysis.predictions import prediction_panel_data
    from freqkit.data import build_datasets
    from freqkit.data.spec import DataInfo
    from freqkit.experiment.runs import train_history
    from freqkit.train import TrainConfig, train
    from freqkit.train.loop import input_stats, normalize, preflight

    t0 = time.perf_counter()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FreqkitError("freqkit compare runs in one process; under torchrun use freqkit train for each model")
    named = _normalize_models(models)
    seed_list = parse_seeds(seeds)
    if analyze_images < 1:
        raise ParameterError("analyze_images", f"must be at least 1, got {analyze_images}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in train_options:
        if key not in known or key in _OWN_FIELDS:
            raise ParameterError(key, f"is not a training option of compare; use one of {', '.join(sorted(known - set(_OWN_FIELDS)))}")
    base_cfg = TrainConfig(steps=steps, data=data if isinstance(data, str) else "custom", **train_options).validate()

    tmp = None
    lock: Optional[RunLock] = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="freqkit-compare-")
        root = Path(tmp.name)
    else:
        root = Path(out)
        check_writable_dir(root, "out")
        # one comparison per folder, for its whole length: a second one fails here, before touching any finished run
        lock = RunLock(root, "out").acquire()
    try:
        if isinstance(data, str):
            splits, info = build_datasets(data, task=base_cfg.task, img_size=base_cfg.img_size, num_classes=base_cfg.num_classes,
                                          splits=("val",))
            datasets = None
        else:
            if not {"train", "val"} <= set(data):
                raise ParameterError("data", "as a mapping needs 'train' and 'val' datasets")
            if base_cfg.task is None or base_cfg.num_classes is None:
                raise ParameterError("task", "and num_classes must be given when data is a mapping of datasets")
            size = int(data["val"][0][0].shape[-1])
            datasets, splits = dict(data), dict(data)
            info = DataInfo(name="custom", task=base_cfg.task, num_classes=base_cfg.num_classes, img_size=size, classes=())
        for name, spec in named.items():
            if not isinstance(spec, str) and not callable(spec):
                raise ParameterError("models", f"entry {name!r} is neither a model spec string nor a callable returning a module")
        if isinstance(data, str):
            # every spec is built and fed one image, every run folder proven writable, before anything trains
            preflight([dataclasses.replace(base_cfg, model=spec, seed=seed_list[0], out=str(root / "runs" / _slug(name) / f"seed{seed_list[0]}"))
                       for name, spec in named.items() if isinstance(spec, str)])
        images01 = _fixed_images(splits["val"], analyze_images)
        # predictions: 4 fixed images for segmentation panels; up to 512 for classification confusion matrices
        n_pred = min(len(splits["val"]), 4 if info.task == "segmentation" else 512)
        pred_items = [splits["val"][i] for i in range(n_pred)]
        pred_images = torch.stack([it[0] for it in pred_items])
        pred_targets = torch.stack([torch.as_tensor(it[1]) for it in pred_items])
        predictions: Optional[dict[str, Any]] = None

        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in named}
        first_reports = []
        device = torch.device("cpu")
        for name, spec in named.items():
            for seed in seed_list:
                run_dir = root / "runs" / _slug(name) / f"seed{seed}"
                cfg = dataclasses.replace(base_cfg, model=name if callable(spec) else spec, seed=seed, out=str(run_dir))
                done = _previous_run(run_dir, cfg) if resume and not callable(spec) else None
                if done is None:
                    cfg.resume = bool(resume)
                    cfg.overwrite = not resume  # compare owns its runs: without resume they are trained again
                    net = None
                    if callable(spec):
                        torch.manual_seed(seed)
                        net = spec()
                    res = train(cfg, model=net, datasets=datasets)
                    # the log holds every step, also those before a resume (res.history starts at the resume)
                    done = {"model": res.model, "metrics": res.metrics, "history": train_history(run_dir) or res.history,
                            "seconds": res.seconds, "seconds_per_step": res.seconds_per_step}
                    atomic_write_json(run_dir / "timing.json", {k: done[k] for k in ("seconds", "seconds_per_step")})
                else:
                    print(f"{name} seed {seed}: reusing the finished run in {run_dir}", file=sys.stderr)
                net = done["model"].eval()
                mean, std = input_stats(net)
                enc = _encoder(net)
                device = next(enc.parameters()).device
                x = normalize(images01.to(device), mean, std)
                try:
                    with torch.no_grad():
                        rep = analyze({name: enc}, x, info={name: {"weights": f"trained {steps} steps, seed {seed}"}})
                except FreqkitError as err:  # e.g. a features-only wrapper whose layers analyze cannot find
                    print(f"{name}: no spectral diagnostics ({err})", file=sys.stderr)
                    rep = None
                if seed == seed_list[0]:
                    if rep is not None:
                        first_reports.append(rep)
                    predictions = _merge_predictions(predictions, prediction_panel_data(
                        {name: net}, pred_images.to(device), pred_targets, info.task, mean, std,
                        num_classes=info.num_classes, class_names=list(info.classes) or None))
                runs[name].append({
                    "seed": seed,
                    "metrics": done["metrics"],
                    "seconds": done["seconds"],
                    "seconds_per_step": done["seconds_per_step"],
                    "parameters": int(sum(p.numel() for p in net.parameters())),
                    "history": [h for h in done["history"] if h.get("split") == "train"],
                    **{key: None if rep is None else rep[name].series(key) for key in CURVES},
                })
                if not keep_checkpoints:
                    import shutil

                    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
                print(f"{name} seed {seed}: {format_metrics(done['metrics'])}  ({done['seconds']:.1f} s)", file=sys.stderr)

        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        options = {k: v for k, v in train_options.items() if v != defaults.get(k)}  # the call shows what differs
        call = f"freqkit.compare({list(named)!r}, data={data if isinstance(data, str) else 'custom'!r}, steps={steps}, seeds={tuple(seed_list)!r}" + "".join(
            f", {k}={v!r}" for k, v in options.items()) + ")"
        settings = {
            "call": call,
            "models": list(named), "data": data if isinstance(data, str) else "custom", "task": info.task,
            "num_classes": info.num_classes, "img_size": info.img_size, "steps": steps,
            "batch_size": base_cfg.batch_size, "lr": base_cfg.lr, "schedule": base_cfg.schedule, "seeds": seed_list,
            "train_options": options, "val_images": len(splits["val"]), "analyze_images": int(images01.shape[0]),
            "device": str(device), "torch_threads": torch.get_num_threads(),
            "total_seconds": round(time.perf_counter() - t0, 1),
        }
        result = Comparison(settings=settings, summary=summarize(runs, info.task), runs=runs, predictions=predictions,
                            analysis=Report.merge(*first_reports) if first_reports else None)
        if out is not None:
            result.save(root)
        return result
    finally:
        if lock is not None:
            lock.release()
        if tmp is not None:
            tmp.cleanup()


def _merge_predictions(acc: Optional[dict[str, Any]], one: dict[str, Any]) -> dict[str, Any]:
    """Panel data of several models computed one model at a time: per-model entries gathered, shared ones kept."""
    if acc is None:
        return one
    acc["models"] = acc["models"] + one["models"]
    for key, value in one.items():
        if isinstance(value, dict) and isinstance(acc.get(key), dict):
            acc[key].update(value)
    return acc


def format_metrics(metrics: Mapping[str, float]) -> str:
    """'miou 0.412  boundary_f1 0.301 ...' with the headline metrics first."""
    order = ["top1", "miou", "boundary_f1", "pixel_acc", "loss"]
    keys = [k for k in order if k in metrics] + sorted(k for k in metrics if k not in order and isinstance(metrics[k], (int, float)))
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def _pngs(figures: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    out = []
    for stem, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out.append((f"{stem}.png", buf.getvalue()))
    return out


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
            + [f"{100 * row[cols[0]].get('delta', 0):+.2f}" if cols[0] in row else "-", f"{row['parameters'] / 1e6:.2f}M", f"{1000 * row['seconds_per_step']:.0f}"]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _figures(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Figures: spectral curves per layer (mean over seeds, min..max band) and training loss, one line per model."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 3.8), dpi=110, layout="constrained")
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
                ax.fill_between(layers, [min(v) for v in zip(*curves)], [max(v) for v in zip(*curves)], color=line.get_color(), alpha=0.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    spectral = fig

    fig = Figure(figsize=(5.5, 3.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    for name, rs in runs.items():
        steps = [h["step"] for h in rs[0]["history"]]
        if not steps:
            continue
        losses = [statistics.fmean(v) for v in zip(*[[h["loss"] for h in r["history"]] for r in rs])]
        ax.plot(steps, losses, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return {"spectral": spectral, "loss": fig}


def render_html(settings: dict[str, Any], summary: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]],
                figures: list[tuple[str, bytes]]) -> str:
    """One self-contained HTML page: settings, metrics table, figures, per-layer table."""
    e = html.escape
    task = settings["task"]
    cols = list(HEADLINE[task])
    seeds = len(settings["seeds"])
    spread = "mean ± sample std over seeds" if seeds > 1 else "one seed"
    head = "".join(f"<th>{e(c)} (%)</th>" for c in cols) + f"<th>Δ {e(cols[0])} vs {e(settings['models'][0])}</th><th>params</th><th>train s/step</th><th>per-seed {e(cols[0])}</th>"
    body = []
    for name, row in summary.items():
        cells = "".join(f"<td>{_fmt_ms(row[c], row['seeds']) if c in row else '-'}</td>" for c in cols)
        delta = row[cols[0]].get("delta") if cols[0] in row else None
        per_seed = ", ".join(f"{100 * v:.2f}" for v in row[cols[0]]["values"]) if cols[0] in row else "-"
        body.append(
            f"<tr><td><b>{e(name)}</b></td>{cells}<td>{'-' if delta is None else f'{100 * delta:+.2f}'}</td>"
            f"<td>{row['parameters'] / 1e6:.3f} M</td><td>{row['seconds_per_step']:.3f}</td><td>{per_seed}</td></tr>"
        )
    layer_rows = []
    for name, row in summary.items():
        for i, (hf, cs, er) in enumerate(zip(row["hf_ratio"], row["cosine_similarity"], row["effective_rank"])):
            layer_rows.append(f"<tr><td>{e(name)}</td><td>{i + 1}</td><td>{hf:.4f}</td><td>{cs:.4f}</td><td>{er:.2f}</td></tr>")
    def img(n: str, b: bytes) -> str:
        return f'<figure><img alt="{e(n)}" src="data:image/png;base64,{base64.b64encode(b).decode()}"></figure>'

    imgs = "".join(img(n, b) for n, b in figures if not n.startswith("predictions"))
    pred_imgs = "".join(img(n, b) for n, b in figures if n.startswith("predictions"))
    pred_note = (
        "Four fixed validation images: the image, the ground truth and each model's prediction (first seed), one palette. "
        "White: true boundary pixels with no predicted boundary nearby (missed); black: predicted boundary pixels with no "
        "true boundary nearby (spurious); the tolerance is boundary F1's. Grey: unlabelled."
        if task == "segmentation" else
        "Confusion matrix per model (first seed) over the validation images: rows the true class, columns the prediction."
    )
    predictions_html = f"<h2>Predictions</h2><p style='font-size:12px'>{e(pred_note)}</p>{pred_imgs}" if pred_imgs else ""
    settings_rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in settings.items())
    metric_note = (
        "mIoU: torchmetrics MulticlassJaccardIndex (macro over classes present, ignore_index 255); boundary F1: class-agnostic "
        "label boundaries matched within 0.75% of the image diagonal (at least 1 px), micro-averaged over the validation set; "
        "pixel accuracy over non-ignored pixels."
        if task == "segmentation" else "top-1 accuracy over the validation split."
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>freqkit compare</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 8px 0 18px; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
.row {{ display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }}
figure {{ margin: 0; }} img {{ max-width: 100%; }} code {{ background: #f3f3f3; padding: 1px 4px; }}
</style></head><body>
<h1>freqkit compare</h1>
<p><code>{e(settings.get('call', ''))}</code></p>
<p>{e(task)} on <b>{e(settings['data'])}</b>, {settings['steps']} steps per run, seeds {e(str(settings['seeds']))}; {spread}.
Spectral curves: <code>freqkit.analyze</code> on the trained backbone, {settings['analyze_images']} fixed validation images
(mean over seeds; band = min..max over seeds). Full diagnostics of the first seed: <a href="analysis/report.html">analysis/report.html</a>.</p>
<div class="row">
<div><h2>Metrics</h2>
<table><tr><th>model</th>{head}</tr>{''.join(body)}</table>
<p style="font-size:12px;max-width:560px">{e(metric_note)} Small-scale CPU runs: differences within the spread over seeds are not evidence.</p>
</div>
<div><h2>Spectral diagnostics</h2>{imgs}</div>
</div>
{predictions_html}
<h2>Per-layer values (mean over seeds)</h2>
<table><tr><th>model</th><th>block</th><th>HF ratio</th><th>token cos sim</th><th>eff. rank</th></tr>{''.join(layer_rows)}</table>
<h2>Settings</h2><table>{settings_rows}</table>
</body></html>
"""
