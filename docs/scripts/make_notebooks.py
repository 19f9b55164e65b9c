"""Write the example notebooks of docs/notebooks/ from the cells below, without outputs.

    python docs/scripts/make_notebooks.py

The notebooks are generated so that their source lives in one reviewable Python file; CI executes them
(tests/docs/test_notebooks.py).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parents[1] / "notebooks"

DIAGNOSE = [
    new_markdown_cell(
        "# Diagnose a timm ViT and a freqkit model\n\n"
        "This notebook runs `freqkit.analyze` on a timm ViT-Tiny and on freqkit's SPANet-S, both at random "
        "initialisation (nothing is downloaded), over scikit-image's built-in photographs, and reads the report: "
        "the per-layer table, single metrics, and the figures. With pretrained weights "
        "(`timm.create_model(name, pretrained=True)`, online) the same code diagnoses a trained model. "
        "It runs offline in under a minute on one CPU core."
    ),
    new_code_cell(
        "import timm\n"
        "import torch\n"
        "from IPython.display import Image, display\n"
        "\n"
        "import freqkit\n"
        "\n"
        "torch.manual_seed(0)\n"
        "images = freqkit.data.builtin_images(size=64)      # (B, 3, H, W), ImageNet-normalized\n"
        "print(tuple(images.shape))"
    ),
    new_markdown_cell("Every freqkit model is known to timm once `freqkit` is imported. A dict names the models in the report."),
    new_code_cell(
        'vit = timm.create_model("vit_tiny_patch16_224", img_size=64)\n'
        'spanet = timm.create_model("spanet_small")\n'
        'report = freqkit.analyze({"vit_tiny": vit, "spanet_small": spanet}, images, attention=True)\n'
        "print(report.table())"
    ),
    new_markdown_cell(
        "## Reading the table\n\n"
        "- **HF ratio**: share of each layer's spectral energy above half the Nyquist radius (0.80 for white noise, "
        "0 for a constant map). Falling with depth means the layers smooth.\n"
        "- **dlogA HF**: log amplitude at the highest frequency relative to DC (Park & Kim 2022); more negative = smoother.\n"
        "- **eff. rank** and **cos sim**: the token matrix's effective rank and the mean |cosine| between tokens; "
        "over-smoothing lowers the first and pushes the second towards 1.\n"
        "- **local DC / local HF / global HF** (attention layers only): the attention kernels' response at DC and at "
        "the highest ring, and the whole attention operator's response at the highest ring.\n\n"
        "Single metrics come out as one value per layer:"
    ),
    new_code_cell(
        "for name in report.names:\n"
        '    hf = report[name].series("hf_ratio")\n'
        '    cos = report[name].series("cosine_similarity")\n'
        '    print(f"{name:14s} HF ratio first/last {hf[0]:.3f} / {hf[-1]:.3f}",\n'
        '          f"  cos sim first/last {cos[0]:.3f} / {cos[-1]:.3f}")'
    ),
    new_markdown_cell("## Figures\n\n`report.plot(folder)` writes every figure as PNG; here they are shown inline."),
    new_code_cell(
        'paths = report.plot("figures")\n'
        "print([p.name for p in paths])\n"
        "for p in paths:\n"
        '    if p.name in ("layer_metrics.png", "spectral_curves.png", "responses.png"):\n'
        "        display(Image(filename=str(p)))"
    ),
    new_markdown_cell(
        "## Checking a number by hand\n\n"
        "The report's numbers are the `freqkit.spectral` functions averaged over images. "
        "`freqkit.capture` returns the raw per-layer tokens, so any entry can be recomputed:"
    ),
    new_code_cell(
        "from freqkit import spectral\n"
        "\n"
        "last = freqkit.capture(vit.eval(), images).layers[-1]\n"
        "by_hand = float(spectral.high_frequency_ratio(last.spatial_map()).mean())\n"
        'print(last.name, by_hand, report["vit_tiny"].layers[-1].hf_ratio)\n'
        'assert abs(by_hand - report["vit_tiny"].layers[-1].hf_ratio) < 1e-5'
    ),
    new_markdown_cell(
        '`report.save("report")` writes `report.json`, `figures/*.png` and one self-contained `report.html`; '
        "`freqkit.Report.from_json` reads the JSON back without torch."
    ),
    new_code_cell('written = report.save("report")\nprint(written["json"], written["html"])'),
]

RETROFIT = [
    new_markdown_cell(
        "# Retrofit FDAM into a small ViT, train it beside the baseline, compare the spectra\n\n"
        "`freqkit.convert` adds FDAM (AttInv + FreqScale) to an existing timm ViT in place, starting exactly at the "
        "original function. `freqkit.compare` then trains the baseline and the retrofitted model on the built-in "
        "synthetic segmentation data (`shapes`), evaluates them and diagnoses their spectra. Kept tiny so that it "
        "runs offline in about a minute on one CPU core: the numbers are a smoke test, not a result."
    ),
    new_code_cell(
        "import timm\n"
        "import torch\n"
        "from IPython.display import Image, display\n"
        "\n"
        "import freqkit\n"
        "\n"
        "torch.manual_seed(0)\n"
        "small = dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2)\n"
        'base = timm.create_model("vit_tiny_patch16_224", **small).eval()\n'
        'fdam = freqkit.convert(timm.create_model("vit_tiny_patch16_224", **small), "fdam").eval()\n'
        "missing, unexpected = fdam.load_state_dict(base.state_dict(), strict=False)\n"
        'print(f"{len(missing)} new FDAM tensors, {len(unexpected)} unexpected")\n'
        "print(sorted({k.split('.', 2)[2].split('.')[0] for k in missing}))"
    ),
    new_markdown_cell("At initialisation the retrofitted model computes exactly what the original does:"),
    new_code_cell(
        "x = torch.randn(2, 3, 32, 32)\n"
        "with torch.no_grad():\n"
        "    print(float((fdam(x) - base(x)).abs().max()))\n"
        'print(freqkit.flops(base, (1, 3, 32, 32)).total, freqkit.flops(fdam, (1, 3, 32, 32)).total, "MACs")'
    ),
    new_markdown_cell(
        "## Train both briefly\n\n"
        "Model specs `vit_micro` (a 4-block ViT, dim 32, patch 8) and `vit_micro+fdam` (the same with FDAM retrofitted "
        "by `convert`); the data spec `shapes:size=32,train=128,val=16` generates the images. Two seeds give a spread."
    ),
    new_code_cell(
        'cmp = freqkit.compare(["vit_micro", "vit_micro+fdam"], data="shapes:size=32,train=128,val=16", steps=150,\n'
        '                      seeds=(0, 1), batch_size=8, out="compare", progress=False)\n'
        "print(cmp.table())"
    ),
    new_markdown_cell(
        "## Compare the spectra\n\n"
        "`cmp.summary[model]` holds each metric's mean, spread and per-seed values, and the per-layer curves "
        "averaged over seeds. FDAM's high-pass branch should keep more high-frequency energy and less token "
        "similarity in the deeper blocks; with so little training the difference is small."
    ),
    new_code_cell(
        "for name, s in cmp.summary.items():\n"
        '    hf = ", ".join(f"{v:.3f}" for v in s["hf_ratio"])\n'
        '    cos = ", ".join(f"{v:.3f}" for v in s["cosine_similarity"])\n'
        '    print(f"{name:15s} HF ratio per block: {hf}   cos sim: {cos}")'
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "\n"
        "fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))\n"
        "for name, s in cmp.summary.items():\n"
        '    axes[0].plot(range(1, len(s["hf_ratio"]) + 1), s["hf_ratio"], marker="o", label=name)\n'
        '    axes[1].plot(range(1, len(s["cosine_similarity"]) + 1), s["cosine_similarity"], marker="o", label=name)\n'
        'axes[0].set_title("high-frequency ratio")\n'
        'axes[1].set_title("token cosine similarity")\n'
        "for ax in axes:\n"
        '    ax.set_xlabel("block")\n'
        "    ax.grid(alpha=0.3)\n"
        "    ax.legend()\n"
        "plt.show()"
    ),
    new_markdown_cell(
        "The saved comparison (`compare/report.html`) has the same curves, the training losses and predictions on "
        "fixed validation images; `compare/analysis/` holds the full `analyze` report of the first seed's models."
    ),
    new_code_cell(
        'import os\n\nprint(sorted(os.listdir("compare")))\ndisplay(Image(filename="compare/analysis/figures/layer_metrics.png"))'
    ),
]


NOTEBOOKS = {"diagnose.ipynb": DIAGNOSE, "retrofit_fdam.ipynb": RETROFIT}


def render(cells: list) -> str:
    """The notebook file's text: the cells without outputs, kernel python3."""
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating an unchanged notebook changes no byte
    nb = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    return nbformat.writes(nb) + "\n"


if __name__ == "__main__":
    from freqkit.io import atomic_write_text

    OUT.mkdir(parents=True, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        print("wrote", atomic_write_text(OUT / name, render(cells)))
