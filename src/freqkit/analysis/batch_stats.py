"""Per-batch statistics of :func:`freqkit.analyze`: what one batch adds to a model's :class:`Accumulator`.

Per layer (spatial tokens only): high-frequency ratio, 2-D log-amplitude spectrum, relative log amplitude,
effective rank, token cosine similarity, rank-collapse residual; with attention the local / global
responses and the per-head maps; the HSIC sums of the CKA matrices; the effective receptive fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from freqkit import spectral as S
from freqkit.analysis.accumulator import Accumulator
from freqkit.errors import FreqkitError
from freqkit.probe import Capture, effective_receptive_field
from freqkit.spectral._common import map_threads

__all__ = [
    "layer_meta",
    "check_finite",
    "coarsest",
    "pool",
    "hsic_sum",
    "fourier_stats",
    "add_batch",
    "add_joint_cka",
    "add_erf",
    "erf_layers",
]

_HSIC_BYTES = 1 << 22  # Gram matrices of one HSIC chunk stay under ~4 MB


def layer_meta(cap: Capture) -> list[dict[str, Any]]:
    """One dict per captured layer: name, kind ("tokens" / "map"), grid_size, channels, num_prefix_tokens, heads."""
    meta = []
    for layer in cap.layers:
        m = layer.spatial_map()
        meta.append(
            {
                "name": layer.name,
                "kind": "tokens" if layer.is_tokens else "map",
                "grid_size": tuple(int(g) for g in layer.grid_size),
                "channels": int(m.shape[1]),
                "num_prefix_tokens": int(layer.num_prefix_tokens),
                "heads": int(layer.attn.shape[1]) if layer.attn is not None else 0,
            }
        )
    return meta


def check_finite(cap: Capture, name: str) -> None:
    """NaN or inf would surface later as an SVD failure deep in the rank metrics: name the layer instead."""
    for layer in cap.layers:
        if not bool(torch.isfinite(layer.spatial_map()).all()):
            raise FreqkitError(
                f"model {name}: the output of layer {layer.name} holds NaN or inf; check the model's weights "
                "(torch.isfinite on its parameters) and the input images"
            )


def coarsest(grids: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The smallest height and width among ``grids``."""
    return min(g[0] for g in grids), min(g[1] for g in grids)


def pool(m: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Maps (B, C, h, w) average-pooled to ``grid`` (unchanged when already there)."""
    return m if tuple(m.shape[-2:]) == tuple(grid) else F.adaptive_avg_pool2d(m.float(), grid)


def hsic_sum(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over images of the unbiased HSIC matrix of maps (B, C_l, h, w) with tokens as samples -> (L, L) float64 cpu."""
    b, _, h, w = maps[0].shape
    n = h * w
    per_image = max(1, len(maps) * n * n * 8)
    step = max(1, _HSIC_BYTES // per_image)
    total = None
    for s in range(0, b, step):
        feats = [m[s : s + step].flatten(2).transpose(1, 2) for m in maps]
        part = S.hsic_matrix(feats).sum(dim=0).cpu()
        total = part if total is None else total + part
    return total


def fourier_stats(
    maps: torch.Tensor, cutoff: float, layers: int, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FFT for three statistics of maps (L * B, C, H, W): the high-frequency ratio (L, B), the
    centred log-amplitude spectrum (L, H, W) and the relative log amplitude (L, K), each as
    `high_frequency_ratio`, `spectrum` and `relative_log_amplitude` define them, per layer."""
    from freqkit.spectral._common import to_compute
    from freqkit.spectral.fourier import _half_diagonal

    x = to_compute(maps)
    lb, c, h, w = x.shape
    amp = torch.fft.fft2(x).abs()
    # the ratio is scale-free; dividing by each channel's largest amplitude keeps |F|^2 far from overflow
    top = amp.amax(dim=(-2, -1), keepdim=True)
    power = (amp / torch.where(top > 0, top, torch.ones_like(top))).square()
    high = (S.frequency_radius(h, w, centered=False, device=x.device, dtype=torch.float64) > cutoff).to(power.dtype)
    total = power.sum(dim=(-2, -1))
    above = (power * high).sum(dim=(-2, -1))
    hf = torch.where(total > 0, above / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total)).mean(
        dim=1
    )
    logs = torch.log(amp + eps).view(layers, lb // layers, c, h, w).mean(dim=(1, 2))
    spec = torch.fft.fftshift(logs, dim=(-2, -1))
    rows, cols = _half_diagonal(h, w, spec.device)
    line = spec[:, rows, cols]
    return hf.view(layers, lb // layers), spec, line - line[:, :1]


def add_batch(
    cap: Capture, acc: Accumulator, cutoff: float, bins: int, chunk_size: int, cka: bool
) -> Optional[list[torch.Tensor]]:
    """Add one batch's statistics (sums over its images) to ``acc``; returns the model-grid maps for CKA."""
    b = int(cap.layers[0].spatial_map().shape[0])
    if not acc.meta:
        acc.meta = layer_meta(cap)
    tokens = [layer.spatial_tokens() for layer in cap.layers]
    maps = [layer.spatial_map() for layer in cap.layers]
    if all(t.shape == tokens[0].shape for t in tokens):
        # the similarity is a mean over images (each with the same token count): weight by batch size
        acc.add(-1, "cross", S.cross_layer_similarity(tokens), b)
    else:
        acc.cross_ok = False

    def layer_stats(i: int) -> tuple[torch.Tensor, ...]:
        hf, spec, rla = fourier_stats(maps[i], cutoff, 1)
        x = tokens[i]
        return S.effective_rank(x), S.token_cosine_similarity(x), S.rank_collapse_residual(x), hf[0], spec[0], rla[0]

    # layer by layer: each layer's temporaries (float64 Grams, complex spectra) have the same sizes
    # batch after batch, so malloc reuses its blocks and a long stream's peak memory stays flat (all
    # layers stacked into one call: +8 to +14 % from 24 to 768 images); on the CPU the layers run side
    # by side on torch's threads, which small matrices (LAPACK's above all) leave idle otherwise.
    on_cpu = tokens[0].device.type == "cpu"
    stats = map_threads(layer_stats, range(len(tokens))) if on_cpu else [layer_stats(i) for i in range(len(tokens))]
    for i, (layer, (erank, cos, resid, hf, spec, rla)) in enumerate(zip(cap.layers, stats)):
        acc.add(i, "effective_rank", erank.sum())
        acc.add(i, "cosine_similarity", cos.sum())
        acc.add(i, "rank_collapse_residual", resid.sum())
        acc.add(i, "hf_ratio", hf.sum())
        # the spectrum and the relative log amplitude are means over the batch: weight by its size
        acc.add(i, "spectrum", spec, b)
        acc.add(i, "relative_log_amplitude", rla, b)
        if layer.attn is not None:
            a, grid, p = layer.attn, layer.grid_size, layer.num_prefix_tokens
            summary = S.local_response_summary(a, grid, p, bins=bins, chunk_size=chunk_size)
            acc.add(i, "local_mean", summary["mean"].sum(0))
            acc.add(i, "local_std", summary["std"].sum(0))
            acc.add(i, "local_dc", summary["dc"].sum())
            if layer.v is not None and layer.attn_out is not None:
                resp = S.global_response(layer.v_map(), layer.attn_out_map(), mode="aggregate")
                acc.add(i, "global", S.radial_profile(resp, bins).sum(0))
            acc.add(i, "head_hf_share", S.local_response_hf_share(a, grid, p, cutoff, chunk_size).sum(0))
            acc.add(i, "head_entropy", S.attention_entropy(a).sum(0))
            acc.add(i, "head_distance", S.attention_distance(a, grid, p, chunk_size).sum(0))
            heads = a.shape[1]
            acc.add(i, "head_effective_rank", S.effective_rank(a.flatten(0, 1)).view(b, heads).sum(0))
    if not cka:
        return None
    grid = coarsest([meta["grid_size"] for meta in acc.meta])
    if grid[0] * grid[1] < 4:
        return None  # the unbiased HSIC needs 4 samples (tokens) per image
    pooled = [pool(m, grid) for m in maps]
    acc.add(-1, "hsic", hsic_sum(pooled))
    return pooled


def add_erf(model: nn.Module, batch: torch.Tensor, names: list[str], index: dict[str, int], acc: Accumulator) -> None:
    """Add the batch's effective receptive fields (h, w) of the layers ``names`` (weighted by the batch size)."""
    maps = effective_receptive_field(model, batch, names)
    for name, m in maps.items():
        acc.add(index[name], "erf", m, int(batch.shape[0]))


def erf_layers(erf: Union[bool, Sequence[str]], meta: list[dict[str, Any]]) -> list[str]:
    """The layers whose receptive fields ``erf`` asks for: none, 4 evenly spaced (True) or the named ones."""
    names = [m["name"] for m in meta]
    if erf is False or erf is None:
        return []
    if erf is True:
        if len(names) <= 4:
            return names
        picks = sorted({round(k * (len(names) - 1) / 3) for k in range(4)})
        return [names[k] for k in picks]
    chosen = [str(e) for e in erf]
    unknown = [e for e in chosen if e not in names]
    if unknown:
        raise FreqkitError(
            f"erf layers {unknown} are not among the analysed layers {names[:4]}...; pass names from layers=, or erf=True"
        )
    return chosen


def add_joint_cka(joint: Accumulator, model_maps: Sequence[Optional[list[torch.Tensor]]], batch_size: int) -> None:
    """Add the HSIC sums between every model's layers (maps pooled to the coarsest grid of all models) to ``joint``."""
    if any(mm is None for mm in model_maps):
        return
    grid = coarsest([tuple(mm[0].shape[-2:]) for mm in model_maps])  # type: ignore[index]
    if grid[0] * grid[1] < 4:
        return  # the unbiased HSIC needs 4 samples (tokens) per image
    # every model's maps on one grid (and one device), in model order: the joint matrix's blocks
    flat_maps = [pool(m, grid) for mm in model_maps for m in mm]  # type: ignore[union-attr]
    if len({m.device for m in flat_maps}) > 1:
        flat_maps = [m.cpu() for m in flat_maps]
    joint.add(-1, "hsic", hsic_sum(flat_maps))
    joint.n += batch_size
