"""Write every figure of the documentation site into docs/figures/ (seeded, deterministic, offline, about 20 s on 1 core).

    PYTHONPATH=src python docs/scripts/make_figures.py            # all figures into docs/figures/
    PYTHONPATH=src python docs/scripts/make_figures.py --quick --out /tmp/figs   # tiny setting, for the test

The metric figures follow one toy experiment: tokens on a 14 x 14 grid pass through 12 layers of softmax
self-attention, once as attention alone (X <- A X, which over-smooths) and once with the residual branch
(X <- X + A X, as in a transformer block). Every curve is computed by the freqkit.spectral function that
the metrics guide names. The report figures are what ``freqkit.analyze(...).plot()`` writes for a
randomly initialised ViT-Tiny and SPANet-S on the built-in photographs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1]

# file name -> what it shows (the metrics guide and the test read this list)
FIGURES: dict[str, str] = {
    "spectrum.png": "log-amplitude spectra and radial profiles before and after attention layers",
    "hf_ratio.png": "high-frequency ratio per layer",
    "relative_log_amplitude.png": "relative log amplitude curves per layer",
    "global_response.png": "global frequency response of one attention layer",
    "local_response.png": "attention kernels of a local and a global head and their local responses",
    "attention_token_spectrum.png": "attention token spectrum of a local and a global head",
    "effective_rank.png": "effective rank per layer",
    "token_similarity.png": "token cosine similarity per layer",
    "cross_layer_similarity.png": "cross-layer similarity matrices",
    "rank_collapse.png": "rank-collapse residual and stable rank per layer",
    "report_layers.png": "per-layer metrics of a freqkit report (ViT-Tiny vs SPANet-S, random init)",
}

# softmax temperature of the toy attention: low enough that a layer is not a plain average
TEMPERATURE = 0.3

STACKS = ("attention only (X <- A X)", "with residual (X <- X + A X)")


def attention(x: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """Softmax attention (N, N) of tokens x (N, C) with random query / key projections."""
    c = x.shape[-1]
    wq = torch.randn(c, c, generator=gen) / c**0.5
    wk = torch.randn(c, c, generator=gen) / c**0.5
    xn = torch.nn.functional.layer_norm(x, (c,))
    return torch.softmax((xn @ wq) @ (xn @ wk).T / (temperature * c**0.5), dim=-1)


def local_attention(h: int, w: int, sigma: float) -> torch.Tensor:
    """Attention (N, N) whose rows are Gaussian windows of width ``sigma`` patches around each query."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], -1).double()
    d2 = torch.cdist(pos, pos) ** 2
    return torch.softmax(-d2 / (2 * sigma**2), dim=-1).float()


def run_stacks(grid: int, channels: int, depth: int) -> dict[str, list[torch.Tensor]]:
    """Tokens (N, C) after each of ``depth`` layers, for both stacks, from the same seeded input."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(grid * grid, channels, generator=gen)
    out = {}
    for name in STACKS:
        g = torch.Generator().manual_seed(1)  # the same attention draws for both stacks
        xs = [x0]
        for _ in range(depth):
            x = xs[-1]
            a = attention(x, temperature=TEMPERATURE, gen=g)
            y = a @ x
            xs.append(y if name == STACKS[0] else x + y)
        out[name] = xs
    return out


def as_map(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Tokens (N, C) -> map (1, C, H, W)."""
    return x.T.reshape(1, -1, grid, grid)


def depth_figure(stacks: dict[str, list[torch.Tensor]], fn, ylabel: str, title: str):
    """One curve per stack of ``fn(tokens)`` against depth."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=110)
    for (name, xs), marker in zip(stacks.items(), "os"):
        ax.plot(range(len(xs)), [float(fn(x)) for x in xs], marker=marker, ms=3.5, label=name)
    ax.set_xlabel("layer (0 = input)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_figures(grid: int, channels: int, depth: int) -> dict[str, object]:
    """The metric figures of the toy attention stacks."""
    import matplotlib.pyplot as plt

    from freqkit import spectral as S

    stacks = run_stacks(grid, channels, depth)
    smooth = stacks[STACKS[0]]
    figs: dict[str, object] = {}

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3), dpi=110)
    mid = min(3, depth)
    for ax, (label, x) in zip(axes[:2], [("input", smooth[0]), (f"after {mid} attention layers", smooth[mid])]):
        im = ax.imshow(S.spectrum(as_map(x, grid)).numpy(), cmap="magma")
        ax.set_title(f"log amplitude, {label}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    bins = max(4, grid // 2)
    centers = S.radial_bin_centers(bins).numpy()
    for label, x in [("input", smooth[0]), (f"layer {mid}", smooth[mid]), (f"layer {depth}", smooth[-1])]:
        prof = S.radial_profile(S.spectrum(as_map(x, grid)), bins=bins)
        axes[2].plot(centers, (prof - prof[0]).numpy(), marker="o", ms=3, label=label)
    axes[2].set_xlabel("normalized radius rho (1 = Nyquist)")
    axes[2].set_ylabel("radial profile - DC")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    figs["spectrum.png"] = fig

    figs["hf_ratio.png"] = depth_figure(
        stacks, lambda x: S.high_frequency_ratio(as_map(x, grid))[0], "high-frequency ratio", "energy share at rho > 0.5"
    )

    # constrained layout: a colour bar shared by several panels must not push the labels off the figure
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110, sharey=True, layout="constrained")
    cmap = plt.get_cmap("viridis")
    for ax, (name, xs) in zip(axes, stacks.items()):
        for i, x in enumerate(xs):
            curve = S.relative_log_amplitude(as_map(x, grid)).numpy()
            ax.plot(torch.linspace(0, 1, len(curve)).numpy(), curve, color=cmap(i / max(1, depth)), lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("half diagonal: 0 = DC, 1 = corner")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log amplitude - log amplitude at DC")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, depth))
    fig.colorbar(sm, ax=axes, label="layer", fraction=0.03)
    figs["relative_log_amplitude.png"] = fig

    gen = torch.Generator().manual_seed(2)
    v = smooth[0]
    a = attention(v, temperature=TEMPERATURE, gen=gen)
    resp = S.global_response(as_map(v, grid), as_map(a @ v, grid))[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    im = axes[0].imshow(resp.numpy(), cmap="viridis")
    axes[0].set_title("|F(A V)| / |F(V)|, centred (DC in the middle)", fontsize=9)
    axes[0].set_xticks([]), axes[0].set_yticks([])
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    prof = S.radial_profile(resp, bins=bins)
    axes[1].plot(centers, prof.numpy(), marker="o", ms=3)
    axes[1].axhline(1.0, color="grey", lw=0.8, ls="--")
    axes[1].set_xlabel("normalized radius rho")
    axes[1].set_ylabel("mean response")
    axes[1].set_title("radial profile (dashed: 1 = passed unchanged)", fontsize=9)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    figs["global_response.png"] = fig

    heads = {
        "local head (sigma = 1 patch)": local_attention(grid, grid, 1.0),
        "global head (sigma = 6 patches)": local_attention(grid, grid, 6.0),
    }
    q = (grid // 2) * grid + grid // 2
    fig, axes = plt.subplots(2, 2, figsize=(7.5, 6.4), dpi=110, layout="constrained")
    for col, (name, att) in enumerate(heads.items()):
        axes[0, col].imshow(att[q].reshape(grid, grid).numpy(), cmap="magma")
        axes[0, col].set_title(f"{name}: centre query's kernel", fontsize=8)
        lr = S.local_response(att[None, None], (grid, grid))[0, 0, q]
        share = float(S.local_response_hf_share(att[None, None], (grid, grid))[0, 0])
        im = axes[1, col].imshow(lr.numpy(), cmap="viridis", vmin=0, vmax=1)
        axes[1, col].set_title(f"|F(W_q)|, high-frequency share {share:.3f}", fontsize=8)
        for ax in axes[:, col]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=axes[1, :], fraction=0.03)
    figs["local_response.png"] = fig

    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=110)
    for name, att in heads.items():
        spec = S.attention_token_spectrum(att).numpy()
        ax.plot(spec[: len(spec) // 2 + 1], label=name)
    ax.set_xlabel("token frequency k (0 = DC)")
    ax.set_ylabel("row norm of F A F^H")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["attention_token_spectrum.png"] = fig

    figs["effective_rank.png"] = depth_figure(
        stacks, S.effective_rank, "effective rank", "exp(entropy of normalized singular values)"
    )
    figs["token_similarity.png"] = depth_figure(
        stacks, lambda x: S.token_cosine_similarity(x[None])[0], "mean |cos(x_i, x_j)|", "token cosine similarity"
    )

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110, layout="constrained")
    for ax, (name, xs) in zip(axes, stacks.items()):
        im = ax.imshow(S.cross_layer_similarity([x[None] for x in xs]).numpy(), cmap="magma", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes, fraction=0.03)
    figs["cross_layer_similarity.png"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=110)
    panels = [(S.rank_collapse_residual, axes[0], "rank-collapse residual"), (S.stable_rank, axes[1], "stable rank")]
    for metric, ax, label in panels:
        for (name, xs), marker in zip(stacks.items(), "os"):
            ax.plot(range(len(xs)), [float(metric(x)) for x in xs], marker=marker, ms=3.5, label=name)
        ax.set_xlabel("layer (0 = input)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    figs["rank_collapse.png"] = fig
    return figs


def report_figures(size: int, images: int) -> dict[str, bytes]:
    """The per-layer figure that ``Report.plot`` writes, for ViT-Tiny and SPANet-S (random init, seeded)."""
    import tempfile

    import timm

    import freqkit

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=size)
    torch.manual_seed(0)
    spanet = timm.create_model("spanet_small")
    report = freqkit.analyze({"vit_tiny": vit, "spanet_small": spanet}, freqkit.data.builtin_images(size=size)[:images])
    with tempfile.TemporaryDirectory() as tmp:
        written = {p.name: p.read_bytes() for p in report.plot(tmp)}
    return {"report_layers.png": written["layer_metrics.png"]}


def main(argv: list[str] | None = None) -> list[Path]:
    """Render the figures and write them (atomically) to ``--out``; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DOCS / "figures"), help="output folder (default: docs/figures)")
    parser.add_argument("--quick", action="store_true", help="tiny grid, few layers and images: checks that the script runs")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from freqkit.render import figure_png, write_pngs

    torch.manual_seed(0)
    grid, channels, depth = (6, 16, 3) if args.quick else (14, 64, 12)
    figs = metric_figures(grid, channels, depth)
    figs.update(report_figures(size=32 if args.quick else 128, images=2 if args.quick else 8))
    missing = set(FIGURES) ^ set(figs)
    if missing:
        raise SystemExit(f"figures and FIGURES disagree: {sorted(missing)}")
    pngs = []
    for name in FIGURES:
        fig = figs[name]
        pngs.append((name, fig if isinstance(fig, bytes) else figure_png(fig)))
        if not isinstance(fig, bytes):
            plt.close(fig)
    paths = write_pngs(pngs, args.out)
    print(f"wrote {len(paths)} figures to {args.out}")
    return paths


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
