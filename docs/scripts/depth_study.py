"""The depth study: its tables, figures and per-run JSON from one comparison's ``results.json``.

    torchrun --nproc_per_node 2 -m freqkit compare --models "$(python docs/scripts/depth_study.py --models)" \\
        --seeds 3 --steps 600 --no-progress --out depth-study
    python docs/scripts/depth_study.py depth-study/results.json --out docs/results/depth-study

Every model is ``vit_mini`` (dim 128, 4 heads, patch 8) at depth 4, 8 or 12 (``vit_mini``, ``vit_mini_d8``,
``vit_mini_d12``), as the baseline and with FDAM, GFSA and AttnScale retrofitted by ``freqkit.convert``.
Writes ``depth_study.json`` (one record per run, with its ``depth``, ``method`` and ``seed``), ``tables.md``
and ``depth_study.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

BASES = {4: "vit_mini", 8: "vit_mini_d8", 12: "vit_mini_d12"}
METHODS = ("baseline", "fdam", "gfsa", "attnscale")
TASK_METRICS = ("miou", "boundary_f1", "pixel_acc")
SPECTRAL = ("hf_ratio", "cosine_similarity", "effective_rank")
LABELS = {
    "miou": "mIoU %",
    "boundary_f1": "boundary F1 %",
    "pixel_acc": "pixel acc. %",
    "hf_ratio": "HF ratio",
    "cosine_similarity": "token cos. sim.",
    "effective_rank": "effective rank",
}


def model_names() -> list[str]:
    """The 12 model specs of the study: each depth's base, alone and with each method."""
    return [base if m == "baseline" else f"{base}+{m}" for base in BASES.values() for m in METHODS]


def records(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat record per run: model, depth, method, seed, its metrics, its last block's spectral values, its curves."""
    depth_of = {base: depth for depth, base in BASES.items()}
    out = []
    for model, runs in results["runs"].items():
        base, _, method = model.partition("+")
        if base not in depth_of:
            raise SystemExit(f"{model!r} is not a model of the depth study; expected one of {', '.join(model_names())}")
        for run in runs:
            rec = {"model": model, "depth": depth_of[base], "method": method or "baseline", "seed": run["seed"]}
            rec.update({k: float(run["metrics"][k]) for k in TASK_METRICS})
            for key in SPECTRAL:
                curve = [float(v) for v in run[key]]
                rec[f"{key}_last"] = curve[-1]
                rec[f"{key}_curve"] = curve
            rec["seconds"] = run.get("seconds")
            out.append(rec)
    return sorted(out, key=lambda r: (r["depth"], METHODS.index(r["method"]), r["seed"]))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); sd 0 for one value."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def _values(recs: list[dict[str, Any]], depth: int, method: str, key: str) -> list[float]:
    return [r[key] for r in recs if r["depth"] == depth and r["method"] == method]


def versus_baseline(recs: list[dict[str, Any]], depth: int, method: str, key: str) -> dict[str, Any]:
    """Method minus baseline at one depth: mean difference, and whether the seeds' ranges are apart (beyond the spread)."""
    a, b = _values(recs, depth, method, key), _values(recs, depth, "baseline", key)
    delta = mean_sd(a)[0] - mean_sd(b)[0]
    apart = min(a) > max(b) or max(a) < min(b)
    return {"delta": delta, "beyond_spread": apart}


def tables(recs: list[dict[str, Any]], images: int | str = "the fixed") -> str:
    """Markdown: task metrics (mean ± sd over seeds, difference to the depth's baseline) and last-block spectra."""
    depths = sorted({r["depth"] for r in recs})
    methods = [m for m in METHODS if any(r["method"] == m for r in recs)]
    seeds = sorted({r["seed"] for r in recs})
    lines = [f"Mean ± sample sd over seeds {', '.join(map(str, seeds))}. Δ: method minus the same depth's baseline; "
             "**bold** when every seed of one lies above (or below) every seed of the other.", ""]  # fmt: skip
    head = "| depth | model | " + " | ".join(f"{LABELS[k]} | Δ" for k in TASK_METRICS) + " |"
    lines += [head, "|" + " --- |" * (2 + 2 * len(TASK_METRICS))]
    for d in depths:
        for m in methods:
            cells = []
            for k in TASK_METRICS:
                mean, sd = mean_sd(_values(recs, d, m, k))
                cells.append(f"{100 * mean:.2f} ± {100 * sd:.2f}")
                if m == "baseline":
                    cells.append("")
                else:
                    vs = versus_baseline(recs, d, m, k)
                    text = f"{100 * vs['delta']:+.2f}"
                    cells.append(f"**{text}**" if vs["beyond_spread"] else text)
            lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    lines += ["", f"Last block (the analysed blocks' final one), {images} validation images:", ""]
    lines += ["| depth | model | " + " | ".join(LABELS[k] for k in SPECTRAL) + " |", "|" + " --- |" * (2 + len(SPECTRAL))]
    for d in depths:
        for m in methods:
            cells = []
            for k in SPECTRAL:
                mean, sd = mean_sd(_values(recs, d, m, f"{k}_last"))
                cells.append(f"{mean:.3f} ± {sd:.3f}" if k != "effective_rank" else f"{mean:.2f} ± {sd:.2f}")
            lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(recs: list[dict[str, Any]], path: Path) -> None:
    """Top: each spectral metric per block (relative depth) of the baselines; bottom: mIoU, boundary F1 and last-block values vs depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in recs})
    methods = [m for m in METHODS if any(r["method"] == m for r in recs)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, key in zip(axes[0], SPECTRAL):
        for d in depths:
            curves = [r[f"{key}_curve"] for r in recs if r["depth"] == d and r["method"] == "baseline"]
            n = len(curves[0])
            mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
            ax.plot([(i + 1) / n for i in range(n)], mean, marker="o", ms=3, label=f"depth {d}")
        ax.set(title=f"baseline: {LABELS[key]} per block", xlabel="block / depth")
        ax.legend(fontsize=8)
    panels = (("miou", 100.0), ("boundary_f1", 100.0), ("cosine_similarity_last", 1.0))
    for ax, (key, scale) in zip(axes[1], panels):
        for j, m in enumerate(methods):
            xs = [d + (j - (len(methods) - 1) / 2) * 0.35 for d in depths]
            stats = [mean_sd(_values(recs, d, m, key)) for d in depths]
            ax.errorbar(xs, [scale * s[0] for s in stats], yerr=[scale * s[1] for s in stats], marker="o", capsize=3, label=m)
        name = LABELS.get(key, "last-block token cos. sim.")
        ax.set(title=f"{name} vs depth (mean ± sd)", xlabel="depth", xticks=depths)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """Summarise a depth-study comparison into OUT (or print the study's --models list)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", help="results.json of the comparison")
    p.add_argument("--out", default="docs/results/depth-study", help="output folder")
    p.add_argument("--models", action="store_true", help="print the comma-separated model list and exit")
    args = p.parse_args(argv)
    if args.models:
        print(",".join(model_names()))
        return 0
    if not args.results:
        p.error("give the comparison's results.json")
    results = json.loads(Path(args.results).read_text())
    recs = records(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"settings": results["settings"], "records": recs}
    (out / "depth_study.json.tmp").write_text(json.dumps(payload, indent=1))
    (out / "depth_study.json.tmp").replace(out / "depth_study.json")
    text = tables(recs, results["settings"].get("analyze_images", "the fixed"))
    (out / "tables.md.tmp").write_text(text)
    (out / "tables.md.tmp").replace(out / "tables.md")
    figure(recs, out / "depth_study.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
