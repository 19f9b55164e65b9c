"""``freqkit compare``: train, evaluate and diagnose several models on one dataset, in one report.

    freqkit compare                                         # vit_mini vs vit_mini+fdam on shapes, 1 seed
    freqkit compare --models vit_mini,vit_mini+fdam,vit_mini+attnscale --seeds 3 --out cmp/

For every model of ``--models`` and every seed: train (``freqkit.train``), evaluate on the
validation split, and run ``freqkit.analyze`` on the trained backbone over a fixed batch of
validation images. ``OUT/report.html`` holds the metrics table (mean and spread over seeds) next to
the per-layer high-frequency ratio and token similarity of every model (mean over seeds, band =
min..max over seeds); ``OUT/results.json`` all numbers, ``OUT/analysis/`` the full ``analyze`` report
of the first seed's models, ``OUT/runs/<model>/seed<k>/`` each run's weights and logs.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MODELS = "vit_mini,vit_mini+fdam"
DEFAULT_STEPS = 500
# headline metric per task (first column of the table, and the "delta vs baseline" column)
HEADLINE = {"segmentation": ("miou", "boundary_f1", "pixel_acc"), "classification": ("top1",)}
CURVES = ("hf_ratio", "cosine_similarity", "effective_rank")
SPECTRAL = (("hf_ratio", "high-frequency ratio per layer"), ("cosine_similarity", "token cosine similarity per layer"))


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register ``freqkit compare``."""
    from freqkit.cli.train import MODEL_HELP, add_recipe_arguments

    p = subparsers.add_parser(
        name,
        help="train, evaluate and diagnose several models; one HTML report",
        description="Train each model of --models on --data for --steps (every seed of --seeds), evaluate it, run "
        "freqkit.analyze on it, and write OUT/report.html: metrics (mean and spread over seeds) next to per-layer "
        "spectral curves. Defaults: vit_mini vs vit_mini+fdam on shapes segmentation, a few minutes on 2 CPU cores.",
    )
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated model specs; {MODEL_HELP} (default {DEFAULT_MODELS})")
    add_recipe_arguments(p, steps=DEFAULT_STEPS)
    p.add_argument("--seeds", default="1", help="number of seeds N (seeds 0..N-1) or a comma list such as 0,5,7 (default 1)")
    p.add_argument("--out", default="freqkit-compare", help="output folder (default freqkit-compare)")
    p.add_argument("--analyze-images", type=int, default=16, help="validation images fed to freqkit.analyze (default 16)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's resumable checkpoint/ folder")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs of the same settings found in OUT/runs (and continue checkpointed ones)")
    p.set_defaults(run=run)
    return p


def parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,5,7' -> [0, 5, 7] (a trailing comma makes one explicit seed: '4,' -> [4])."""
    from freqkit.errors import FreqkitError

    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise FreqkitError(f"--seeds {text!r}: give a count N >= 1 or a comma list of integers such as 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise FreqkitError(f"--seeds {text!r}: list each seed once")
    return seeds


def command_line(args: argparse.Namespace) -> str:
    """The ``freqkit compare`` command that reproduces ``args`` (options that differ from the defaults)."""
    probe = argparse.ArgumentParser()
    add_parser(probe.add_subparsers(), "compare")
    defaults = vars(probe.parse_args(["compare"]))
    parts = ["freqkit", "compare"]
    for key, value in vars(args).items():
        if key in ("run", "command") or key not in defaults or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "progress":
            parts.append("--no-progress")
        elif key == "amp":
            parts.append("--amp" if value else "--no-amp")
        elif isinstance(value, bool):
            parts.append(flag)
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def _mean_spread(values: list[float]) -> tuple[float, float]:
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


# settings that define a run: a finished run in OUT/runs is reused by --resume only when all agree
_RUN_KEYS = ("model", "data", "steps", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio",
             "layer_decay", "freq_lr_mult", "clip_grad", "amp", "seed", "drop_path", "head_channels")


def _finished_run(run_dir: Path, cfg) -> dict[str, Any] | None:
    """A finished run of ``cfg``'s settings in ``run_dir`` as {model, metrics, seconds, seconds_per_step, history}, else None."""
    from freqkit.models.checkpoint import load_checkpoint
    from freqkit.train.models import build_model

    files = [run_dir / n for n in ("config.json", "model.safetensors", "metrics.json", "log.jsonl")]
    if not all(f.is_file() for f in files):
        return None
    saved = json.loads(files[0].read_text())
    want = cfg.to_dict()
    if any(saved.get(k) != want[k] for k in _RUN_KEYS) or any(
        want[k] is not None and saved.get(k) != want[k] for k in ("task", "img_size", "num_classes")
    ):
        return None
    model = build_model(saved["model"], saved["task"], saved["num_classes"], saved["img_size"], head_channels=saved["head_channels"])
    load_checkpoint(model, str(files[1]))
    history = [json.loads(line) for line in files[3].read_text().splitlines() if line.strip()]
    history = [h for h in history if h.get("split") == "train"]
    timing_path = run_dir / "timing.json"
    if timing_path.is_file():
        timing = json.loads(timing_path.read_text())
    else:  # runs written without timing.json: per-step time from the logged throughput
        rates = [saved["global_batch_size"] / h["img_per_s"] for h in history[1:] if h.get("img_per_s")]
        per_step = statistics.median(rates) if rates else float("nan")
        timing = {"seconds": per_step * saved["steps"], "seconds_per_step": per_step}
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    return {"model": model.to(device), "metrics": json.loads(files[2].read_text()),
            "history": history, **timing}


def _encoder(model):
    """The part of a trained model that ``analyze`` diagnoses: the backbone of a segmenter, the classifier itself."""
    return getattr(model, "encoder", model)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and analyze every model x seed; write the report."""
    import torch

    from freqkit.analysis import Report, analyze
    from freqkit.cli.train import config_from_args, format_metrics
    from freqkit.data import build_datasets
    from freqkit.errors import FreqkitError
    from freqkit.train import train
    from freqkit.train.loop import input_stats, normalize
    from freqkit.train.models import parse_model_spec

    t0 = time.perf_counter()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FreqkitError("freqkit compare runs in one process; under torchrun use freqkit train for each model")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise FreqkitError("--models is empty; give comma-separated model specs such as vit_mini,vit_mini+fdam")
    if len(set(models)) != len(models):
        raise FreqkitError(f"--models {args.models!r} repeats a model; list each once")
    for m in models:
        parse_model_spec(m)  # every name is checked before anything trains
    seeds = parse_seeds(args.seeds)
    if args.analyze_images < 1:
        raise FreqkitError(f"--analyze-images must be at least 1, got {args.analyze_images}")
    out = Path(args.out)
    splits, info = build_datasets(args.data, task=args.task, img_size=args.img_size, num_classes=args.num_classes, splits=("val",))
    images01 = _fixed_images(splits["val"], args.analyze_images)

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    reports: dict[str, list[Any]] = {m: [] for m in models}
    for model_spec in models:
        for seed in seeds:
            run_dir = out / "runs" / _slug(model_spec) / f"seed{seed}"
            cfg = config_from_args(args, model_spec, seed, str(run_dir))
            done = _finished_run(run_dir, cfg) if args.resume else None
            if done is None:
                cfg.resume = bool(args.resume)
                res = train(cfg)
                done = {"model": res.model, "metrics": res.metrics, "history": res.history,
                        "seconds": res.seconds, "seconds_per_step": res.seconds_per_step}
                (run_dir / "timing.json").write_text(json.dumps({k: done[k] for k in ("seconds", "seconds_per_step")}))
            else:
                print(f"{model_spec} seed {seed}: reusing the finished run in {run_dir}", file=sys.stderr)
            net = done["model"].eval()
            mean, std = input_stats(net)
            enc = _encoder(net)
            device = next(enc.parameters()).device
            x = normalize(images01.to(device), mean, std)
            try:
                with torch.no_grad():
                    rep = analyze({model_spec: enc}, x, info={model_spec: {"weights": f"trained {args.steps} steps, seed {seed}"}})
            except FreqkitError as err:  # e.g. a features-only wrapper whose layers analyze cannot find
                print(f"{model_spec}: no spectral diagnostics ({err})", file=sys.stderr)
                rep = None
            reports[model_spec].append(rep)
            runs[model_spec].append(
                {
                    "seed": seed,
                    "metrics": done["metrics"],
                    "seconds": done["seconds"],
                    "seconds_per_step": done["seconds_per_step"],
                    "parameters": int(sum(p.numel() for p in net.parameters())),
                    "history": [h for h in done["history"] if h.get("split") == "train"],
                    **{key: None if rep is None else rep[model_spec].series(key) for key in CURVES},
                }
            )
            if not args.keep_checkpoints:
                import shutil

                shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
            print(f"{model_spec} seed {seed}: {format_metrics(done['metrics'])}  ({done['seconds']:.1f} s)", file=sys.stderr)

    elapsed = time.perf_counter() - t0
    summary = summarize(runs, info.task)
    settings = {
        "command": command_line(args),
        "models": models, "data": args.data, "task": info.task, "num_classes": info.num_classes, "img_size": info.img_size,
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule, "seeds": seeds,
        "val_images": len(splits["val"]), "analyze_images": int(images01.shape[0]), "device": str(device),
        "torch_threads": torch.get_num_threads(), "total_seconds": round(elapsed, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    first = [reports[m][0] for m in models if reports[m][0] is not None]
    if first:
        Report.merge(*first).save(out / "analysis")
    (out / "results.json").write_text(json.dumps({"settings": settings, "summary": summary, "runs": runs}, indent=1))
    figures = _figures(runs, info.task)
    for fname, png in figures:
        (out / fname).write_bytes(png)
    (out / "report.html").write_text(render_html(settings, summary, runs, figures))
    print(format_table(summary, info.task))
    print(f"wrote {out / 'report.html'} ({elapsed:.0f} s)")
    return 0


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


def _figures(runs: dict[str, list[dict[str, Any]]], task: str) -> list[tuple[str, bytes]]:
    """PNG figures: spectral curves per layer (mean over seeds, min..max band) and training loss, one line per model."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

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
    spectral = png(fig)

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
    return [("spectral.png", spectral), ("loss.png", png(fig))]


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
    imgs = "".join(
        f'<figure><img alt="{e(n)}" src="data:image/png;base64,{base64.b64encode(b).decode()}"></figure>' for n, b in figures
    )
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
<p><code>{e(settings['command'])}</code></p>
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
<h2>Per-layer values (mean over seeds)</h2>
<table><tr><th>model</th><th>block</th><th>HF ratio</th><th>token cos sim</th><th>eff. rank</th></tr>{''.join(layer_rows)}</table>
<h2>Settings</h2><table>{settings_rows}</table>
</body></html>
"""
