"""``analyze``: run the spectral diagnostics over a probe's captures of one or more models.

Per layer (spatial tokens only; prefix tokens are dropped): high-frequency ratio, relative log
amplitude and its high-frequency value, the 2-D log-amplitude spectrum and its radial profile,
effective rank, token cosine similarity and rank-collapse residual; across layers the cross-layer
similarity matrix. With ``attention=True``, per attention layer the local response summary and the
radial profile of the global response R = |F(A V)| / |F(V)| (channel-aggregated).

Images are processed ``batch_size`` at a time; every statistic is a mean over images, exact
whatever the batch size (the spectrum-based curves are means of per-batch means weighted by
batch size, and they are linear in the averaged spectrum).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

from freqkit import spectral as S
from freqkit.analysis.report import ModelReport, Report, LayerStats
from freqkit.errors import FreqkitError
from freqkit.probe import Capture, capture

__all__ = ["analyze", "model_name"]

Models = Union[nn.Module, Mapping[str, nn.Module], Sequence[nn.Module]]


def model_name(model: nn.Module) -> str:
    """A readable name: timm's architecture name when known, else the class name."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def _named_models(models: Models) -> list[tuple[str, nn.Module]]:
    if isinstance(models, nn.Module):
        pairs = [(model_name(models), models)]
    elif isinstance(models, Mapping):
        pairs = [(str(k), v) for k, v in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, (str, bytes)):
        pairs = [(model_name(m), m) for m in models]
    else:
        raise FreqkitError(f"analyze expects a model, a dict name -> model or a list of models, got {type(models).__name__}")
    if not pairs:
        raise FreqkitError("analyze got no models; pass a model, a dict name -> model or a list of models")
    out, seen = [], {}
    for name, m in pairs:
        if not isinstance(m, nn.Module):
            raise FreqkitError(f"analyze: {name!r} is a {type(m).__name__}, not a torch.nn.Module; pass models")
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}-{seen[name]}", m))
    return out


class _Accumulator:
    """Running image-weighted sums of every statistic of one model."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[tuple[int, str], torch.Tensor] = {}
        self.meta: list[dict[str, Any]] = []
        self.cross: Optional[torch.Tensor] = None
        self.cross_ok = True

    def add(self, idx: int, key: str, value: torch.Tensor, weight: int) -> None:
        v = value.detach().to("cpu", torch.float64) * weight
        k = (idx, key)
        self.sums[k] = v if k not in self.sums else self.sums[k] + v

    def mean(self, idx: int, key: str) -> Optional[torch.Tensor]:
        v = self.sums.get((idx, key))
        return None if v is None else v / self.n


def _check_finite(cap: Capture, name: str) -> None:
    """NaN or inf would surface later as an SVD failure deep in the rank metrics: name the layer instead."""
    for layer in cap.layers:
        t = layer.spatial_tokens()
        if not bool(torch.isfinite(t).all()):
            raise FreqkitError(
                f"model {name}: the output of layer {layer.name} holds NaN or inf; check the model's weights "
                "(torch.isfinite on its parameters) and the input images"
            )


def _batch_stats(cap: Capture, acc: _Accumulator, cutoff: float, bins: int, chunk_size: int) -> None:
    """Add one batch's statistics (sums over its images) to ``acc``."""
    b = int(cap.layers[0].spatial_map().shape[0])
    if not acc.meta:
        for layer in cap.layers:
            m = layer.spatial_map()
            acc.meta.append(
                {
                    "name": layer.name,
                    "kind": "tokens" if layer.is_tokens else "map",
                    "grid_size": tuple(layer.grid_size),
                    "channels": int(m.shape[1]),
                    "num_prefix_tokens": int(layer.num_prefix_tokens),
                }
            )
    tokens = [layer.spatial_tokens() for layer in cap.layers]
    maps = [layer.spatial_map() for layer in cap.layers]
    same = all(t.shape == tokens[0].shape for t in tokens)
    if same:
        # one batched call per metric over all layers: the SVDs dominate, and batching them is faster
        stacked = torch.stack(tokens)  # (L, B, N, C)
        flat = stacked.flatten(0, 1)
        erank = S.effective_rank(flat).view(len(tokens), b)
        cos = S.token_cosine_similarity(flat).view(len(tokens), b)
        resid = S.rank_collapse_residual(flat).view(len(tokens), b)
        hf = S.high_frequency_ratio(torch.stack(maps).flatten(0, 1), cutoff).view(len(maps), b)
        acc.add(-1, "cross", S.cross_layer_similarity(stacked), b)
    else:
        erank = [S.effective_rank(t) for t in tokens]
        cos = [S.token_cosine_similarity(t) for t in tokens]
        resid = [S.rank_collapse_residual(t) for t in tokens]
        hf = [S.high_frequency_ratio(m, cutoff) for m in maps]
        acc.cross_ok = False
    for i, (layer, m) in enumerate(zip(cap.layers, maps)):
        acc.add(i, "effective_rank", erank[i].sum(), 1)
        acc.add(i, "cosine_similarity", cos[i].sum(), 1)
        acc.add(i, "rank_collapse_residual", resid[i].sum(), 1)
        acc.add(i, "hf_ratio", hf[i].sum(), 1)
        # the spectrum and the relative log amplitude are means over the batch: weight by its size
        acc.add(i, "spectrum", S.spectrum(m), b)
        acc.add(i, "relative_log_amplitude", S.relative_log_amplitude(m), b)
        if layer.attn is not None:
            summary = S.local_response_summary(layer.attn, layer.grid_size, layer.num_prefix_tokens, bins=bins, chunk_size=chunk_size)
            acc.add(i, "local_mean", summary["mean"].sum(0), 1)
            acc.add(i, "local_std", summary["std"].sum(0), 1)
            acc.add(i, "local_dc", summary["dc"].sum(), 1)
            resp = S.global_response(layer.v_map(), layer.attn_out_map(), mode="aggregate")
            acc.add(i, "global", S.radial_profile(resp, bins).sum(0), 1)
    acc.n += b


def _finish(name: str, acc: _Accumulator, bins: int, info: dict[str, Any]) -> ModelReport:
    layers = []
    for i, meta in enumerate(acc.meta):
        spec = acc.mean(i, "spectrum")
        rla = acc.mean(i, "relative_log_amplitude")
        local = None
        if acc.mean(i, "local_mean") is not None:
            local = {
                "mean": acc.mean(i, "local_mean").tolist(),
                "std": acc.mean(i, "local_std").tolist(),
                "dc": float(acc.mean(i, "local_dc")),
            }
        glob = acc.mean(i, "global")
        layers.append(
            LayerStats(
                **meta,
                hf_ratio=float(acc.mean(i, "hf_ratio")),
                hf_log_amplitude=float(rla[-1]),
                effective_rank=float(acc.mean(i, "effective_rank")),
                cosine_similarity=float(acc.mean(i, "cosine_similarity")),
                rank_collapse_residual=float(acc.mean(i, "rank_collapse_residual")),
                relative_log_amplitude=rla.tolist(),
                # the ring means are linear, so the profile of the mean spectrum is the mean profile
                radial_profile=S.radial_profile(spec, bins).tolist(),
                spectrum=spec.tolist(),
                local_response=local,
                global_response=None if glob is None else glob.tolist(),
            )
        )
    cross = acc.mean(-1, "cross") if acc.cross_ok else None
    return ModelReport(name=name, layers=layers, cross_layer_similarity=None if cross is None else cross.tolist(), info=info)


def _device_dtype(model: nn.Module) -> tuple[torch.device, Optional[torch.dtype]]:
    p = next(iter(model.parameters()), None)
    if p is None:
        return torch.device("cpu"), None
    return p.device, (p.dtype if p.is_floating_point() else None)


def analyze(
    models: Models,
    images: torch.Tensor,
    *,
    attention: bool = False,
    layers: Optional[Sequence[str]] = None,
    cutoff: float = 0.5,
    bins: int = 16,
    batch_size: Optional[int] = None,
    chunk_size: int = 256,
    progress: bool = False,
    info: Optional[Mapping[str, Mapping[str, Any]]] = None,
    settings: Optional[Mapping[str, Any]] = None,
) -> Report:
    """Spectral diagnostics of ``models`` on ``images`` (B, 3, H, W) -> :class:`Report`.

    ``models`` is one model, a dict name -> model, or a list (named by architecture; repeats get
    ``-2``...): several models overlay their curves in one report. Each model runs in eval mode
    (its mode is restored after) on its own device and dtype, ``batch_size`` images at a time
    (default all). ``attention`` adds the local and global attention responses; ``layers`` picks
    module names (default: every ViT block or every stage). ``info`` adds per-model facts (e.g.
    {"name": {"weights": "random init"}}) and ``settings`` extra run settings to the report.
    """
    pairs = _named_models(models)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FreqkitError(f"analyze expects images of shape (B, 3, H, W) with B >= 1, got {shape}; add a batch dimension with x[None]")
    if not 0.0 <= float(cutoff) <= 1.5:
        raise FreqkitError(f"cutoff {cutoff} is outside [0, 1.5]; the normalized radius is 1 at the Nyquist frequency, default 0.5")
    if int(bins) < 1:
        raise FreqkitError(f"bins must be a positive int, got {bins!r}")
    if images.device.type == "meta" or not bool(torch.isfinite(images).all()):
        raise FreqkitError("analyze: the images hold NaN or inf (or are on the meta device); pass finite real-valued images")
    total = int(images.shape[0])
    step = total if batch_size is None else int(batch_size)
    if step < 1:
        raise FreqkitError(f"batch_size must be positive, got {batch_size}")
    starts = list(range(0, total, step))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs) * len(starts), desc="analyze", unit="batch", leave=False)
    reports = []
    try:
        for name, model in pairs:
            device, dtype = _device_dtype(model)
            if device.type == "meta":
                raise FreqkitError(f"model {name} is on the meta device (shapes only); materialize its weights (to_empty + init, or a checkpoint) to analyze it")
            was_training = model.training
            model.eval()
            acc = _Accumulator()
            try:
                for s in starts:
                    batch = images[s : s + step].to(device=device, dtype=dtype or images.dtype)
                    cap = capture(model, batch, attention=attention, layers=layers)
                    _check_finite(cap, name)
                    with torch.no_grad():
                        _batch_stats(cap, acc, float(cutoff), int(bins), int(chunk_size))
                    del cap
                    if bar is not None:
                        bar.set_postfix_str(name)
                        bar.update(1)
            finally:
                model.train(was_training)
            model_info = {
                "class": type(model).__name__,
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "num_layers": len(acc.meta),
                "image_size": [int(images.shape[-2]), int(images.shape[-1])],
                "num_images": total,
                "attention": bool(attention) and any(m["kind"] == "tokens" for m in acc.meta),
            }
            model_info.update(dict((info or {}).get(name, {})))
            reports.append(_finish(name, acc, int(bins), model_info))
    finally:
        if bar is not None:
            bar.close()

    all_settings: dict[str, Any] = {
        "cutoff": float(cutoff),
        "bins": int(bins),
        "global_response_mode": "aggregate",
        "spectrum_eps": 1e-6,
        "effective_rank_center": False,
        "cosine_absolute": True,
        "tokens": "spatial (prefix tokens dropped)",
        "attention": bool(attention),
        "layers": None if layers is None else list(layers),
        "image_size": [int(images.shape[-2]), int(images.shape[-1])],
        "num_images": total,
        "batch_size": step,
        "models": [n for n, _ in pairs],
    }
    all_settings.update(dict(settings or {}))
    return Report(models=reports, settings=all_settings)
