"""``analyze``: stream images through one or more models and summarize their spectral behaviour in a Report.

Per layer (spatial tokens only; prefix tokens are dropped): high-frequency ratio, relative log
amplitude and its high-frequency value, the 2-D log-amplitude spectrum and its radial profile,
effective rank, token cosine similarity and rank-collapse residual; across layers the cross-layer
similarity and the linear CKA matrices. With ``attention=True``, per attention layer the local and
global responses and, per head, the local-response high-frequency share, the attention entropy,
the mean attention distance and the effective rank of the attention map. With ``erf``, the
effective receptive field of selected layers and its radial spectrum.

Streaming: every statistic is a sum over images of a per-image value, kept in float64, so the
statistics of any split of the images (batches, torchrun ranks, an interrupted and resumed run)
add up to those of one pass, and memory does not grow with the number of images.

CKA samples are tokens: within each image the H*W spatial tokens (of one layer, or of another
layer or model at the same grid position) are the samples and the image is the mini-batch of the
unbiased HSIC estimator (Nguyen et al. 2021). This keeps the estimate a per-image sum, so it is
exactly the same whatever the batch size, the number of processes or the order of the images.
With images as samples, the estimate would depend on which images share a mini-batch. Layers with
a finer grid are average-pooled to the coarsest grid first (per model; across models to the
coarsest grid of all), so tokens at the same position cover the same image region.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from freqkit import spectral as S
from freqkit.analysis.report import LayerStats, ModelReport, Report
from freqkit.analysis.stream import atomic_save, load_state, make_source, rank_world
from freqkit.errors import FreqkitError
from freqkit.io import check_writable_dir
from freqkit.limits import check_limit
from freqkit.ranks import together
from freqkit.probe import Capture, capture, effective_receptive_field

__all__ = ["analyze", "model_name"]

Models = Union[nn.Module, str, Mapping[str, Union[nn.Module, str]], Sequence[Union[nn.Module, str]]]

_STATE_VERSION = 1
_ERF_STORED = 64  # ERF maps are stored in the report at most this many pixels a side
_HSIC_BYTES = 1 << 27  # Gram matrices of one HSIC chunk stay under ~128 MB
_JOINT = "\0joint"  # accumulator key of the model-by-model CKA


def model_name(model: nn.Module) -> str:
    """A readable name: timm's architecture name when known, else the class name."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return str(cfg.get("architecture") or getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


def _named_models(models: Models, img_size: Any = None) -> list[tuple[str, nn.Module]]:
    if isinstance(models, (nn.Module, str)):
        models = [models]
    if isinstance(models, Mapping):
        pairs = [(str(k), v) for k, v in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, bytes):
        pairs = [(m if isinstance(m, str) else model_name(m), m) for m in models]
    else:
        raise FreqkitError(f"analyze expects a model, a dict name -> model or a list of models, got {type(models).__name__}")
    if any(isinstance(m, str) for _, m in pairs):
        from freqkit.models import create

        # names build random-init models; use freqkit.models.create for pretrained weights or checkpoints
        pairs = [(k, create(m, img_size=img_size) if isinstance(m, str) else m) for k, m in pairs]
    if not pairs:
        raise FreqkitError("analyze got no models; pass a model, a dict name -> model or a list of models")
    out, seen = [], {}
    for name, m in pairs:
        if not isinstance(m, nn.Module):
            raise FreqkitError(f"analyze: {name!r} is a {type(m).__name__}, not a torch.nn.Module; pass models")
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}-{seen[name]}", m))
    from freqkit.render import check_distinct_folders

    check_distinct_folders([n for n, _ in out], "models")  # each model's figures are files named after it
    return out


class _Accumulator:
    """Float64 running sums over images of every statistic of one model (or of the model-by-model CKA)."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.meta: list[dict[str, Any]] = []
        self.cross_ok = True
        self.image_size: Optional[list[int]] = None

    def add(self, idx: int, key: str, value: torch.Tensor, weight: int = 1) -> None:
        v = value.detach().to("cpu", torch.float64) * weight
        k = f"{idx}/{key}"
        self.sums[k] = v if k not in self.sums else self.sums[k] + v

    def mean(self, idx: int, key: str) -> Optional[torch.Tensor]:
        v = self.sums.get(f"{idx}/{key}")
        return None if v is None or self.n == 0 else v / self.n

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "sums": dict(self.sums), "meta": [dict(m, grid_size=list(m["grid_size"])) for m in self.meta], "cross_ok": self.cross_ok, "image_size": self.image_size}

    def load(self, state: Mapping[str, Any]) -> None:
        self.n = int(state["n"])
        self.sums = {str(k): v.to(torch.float64) for k, v in state["sums"].items()}
        self.meta = [dict(m, grid_size=tuple(m["grid_size"])) for m in state["meta"]]
        self.cross_ok = bool(state["cross_ok"])
        self.image_size = None if state.get("image_size") is None else [int(v) for v in state["image_size"]]


def _meta_of(cap: Capture) -> list[dict[str, Any]]:
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


def _check_finite(cap: Capture, name: str) -> None:
    """NaN or inf would surface later as an SVD failure deep in the rank metrics: name the layer instead."""
    for layer in cap.layers:
        if not bool(torch.isfinite(layer.spatial_map()).all()):
            raise FreqkitError(
                f"model {name}: the output of layer {layer.name} holds NaN or inf; check the model's weights "
                "(torch.isfinite on its parameters) and the input images"
            )


def _coarsest(grids: Sequence[tuple[int, int]]) -> tuple[int, int]:
    return min(g[0] for g in grids), min(g[1] for g in grids)


def _pool(m: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return m if tuple(m.shape[-2:]) == tuple(grid) else F.adaptive_avg_pool2d(m.float(), grid)


def _hsic_sum(maps: Sequence[torch.Tensor]) -> torch.Tensor:
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


def _fourier_stats(maps: torch.Tensor, cutoff: float, layers: int, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    hf = torch.where(total > 0, above / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(total)).mean(dim=1)
    logs = torch.log(amp + eps).view(layers, lb // layers, c, h, w).mean(dim=(1, 2))
    spec = torch.fft.fftshift(logs, dim=(-2, -1))
    rows, cols = _half_diagonal(h, w, spec.device)
    line = spec[:, rows, cols]
    return hf.view(layers, lb // layers), spec, line - line[:, :1]


def _batch_stats(cap: Capture, acc: _Accumulator, cutoff: float, bins: int, chunk_size: int, cka: bool) -> Optional[list[torch.Tensor]]:
    """Add one batch's statistics (sums over its images) to ``acc``; returns the model-grid maps for CKA."""
    b = int(cap.layers[0].spatial_map().shape[0])
    if not acc.meta:
        acc.meta = _meta_of(cap)
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
        hf, spec, rla = _fourier_stats(torch.stack(maps).flatten(0, 1), cutoff, len(maps))
        # the similarity is a mean over images (each with the same token count): weight by batch size
        acc.add(-1, "cross", S.cross_layer_similarity(stacked), b)
    else:
        erank = [S.effective_rank(t) for t in tokens]
        cos = [S.token_cosine_similarity(t) for t in tokens]
        resid = [S.rank_collapse_residual(t) for t in tokens]
        per_layer = [_fourier_stats(m, cutoff, 1) for m in maps]
        hf = [x[0][0] for x in per_layer]
        spec = [x[1][0] for x in per_layer]
        rla = [x[2][0] for x in per_layer]
        acc.cross_ok = False
    for i, (layer, m) in enumerate(zip(cap.layers, maps)):
        acc.add(i, "effective_rank", erank[i].sum())
        acc.add(i, "cosine_similarity", cos[i].sum())
        acc.add(i, "rank_collapse_residual", resid[i].sum())
        acc.add(i, "hf_ratio", hf[i].sum())
        # the spectrum and the relative log amplitude are means over the batch: weight by its size
        acc.add(i, "spectrum", spec[i], b)
        acc.add(i, "relative_log_amplitude", rla[i], b)
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
    grid = _coarsest([meta["grid_size"] for meta in acc.meta])
    if grid[0] * grid[1] < 4:
        return None  # the unbiased HSIC needs 4 samples (tokens) per image
    pooled = [_pool(m, grid) for m in maps]
    acc.add(-1, "hsic", _hsic_sum(pooled))
    return pooled


def _add_erf(model: nn.Module, batch: torch.Tensor, names: list[str], index: dict[str, int], acc: _Accumulator) -> None:
    maps = effective_receptive_field(model, batch, names)
    for name, m in maps.items():
        acc.add(index[name], "erf", m, int(batch.shape[0]))


def _erf_layers(erf: Union[bool, Sequence[str]], meta: list[dict[str, Any]]) -> list[str]:
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
        raise FreqkitError(f"erf layers {unknown} are not among the analysed layers {names[:4]}...; pass names from layers=, or erf=True")
    return chosen


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
        heads = None
        if acc.mean(i, "head_entropy") is not None:
            heads = {k: acc.mean(i, f"head_{k}").tolist() for k in ("hf_share", "entropy", "distance", "effective_rank")}
        erf = None
        erf_map = acc.mean(i, "erf")
        if erf_map is not None:
            h, w = erf_map.shape
            stored = erf_map if max(h, w) <= _ERF_STORED else F.adaptive_avg_pool2d(erf_map[None, None], (min(h, _ERF_STORED), min(w, _ERF_STORED)))[0, 0]
            erf = {
                "map": stored.tolist(),
                "image_size": [int(h), int(w)],
                # of the full-resolution mean map; the log spectrum's ring means (see radial_profile)
                "radial_spectrum": S.radial_profile(S.spectrum(erf_map[None, None]), bins).tolist(),
            }
        glob = acc.mean(i, "global")
        base = {k: v for k, v in meta.items() if k != "heads"}
        layers.append(
            LayerStats(
                **base,
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
                heads=heads,
                erf=erf,
            )
        )
    cross = acc.mean(-1, "cross") if acc.cross_ok else None
    hsic = acc.sums.get("-1/hsic")
    cka = None if hsic is None else S.cka_from_hsic(hsic).tolist()
    if hsic is not None:
        info = dict(info, cka_grid=list(_coarsest([m["grid_size"] for m in acc.meta])))
    return ModelReport(
        name=name, layers=layers, cross_layer_similarity=None if cross is None else cross.tolist(), info=info, cka=cka
    )


def _device_dtype(model: nn.Module) -> tuple[torch.device, Optional[torch.dtype]]:
    p = next(iter(model.parameters()), None)
    if p is None:
        return torch.device("cpu"), None
    return p.device, (p.dtype if p.is_floating_point() else None)


def _weights_digest(model: nn.Module) -> str:
    """A short digest of the model's weights: resuming with other weights must refuse."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        if t.is_floating_point() and t.numel():
            h.update(name.encode())
            h.update(f"{float(t.double().sum()):.10e}".encode())
    return h.hexdigest()[:16]


def _reduce(accs: dict[str, _Accumulator]) -> None:
    """Sum every rank's accumulators (gloo on CPU, NCCL on GPU); ranks that saw no image contribute zeros."""
    import torch.distributed as dist

    summary = {k: (a.meta, {s: list(v.shape) for s, v in a.sums.items()}, a.cross_ok, a.image_size) for k, a in accs.items()}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, summary)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    parts, layout = [], []
    for name in sorted(accs):
        acc = accs[name]
        shapes: dict[str, list[int]] = {}
        for g in gathered:
            meta, keys, ok, size = g[name]
            if meta and not acc.meta:
                acc.meta = [dict(m, grid_size=tuple(m["grid_size"])) for m in meta]
            if size is not None and acc.image_size is None:
                acc.image_size = size
            acc.cross_ok = acc.cross_ok and ok
            shapes.update(keys)
        for key in sorted(shapes):
            t = acc.sums.get(key, torch.zeros(shapes[key], dtype=torch.float64))
            parts.append(t.reshape(-1))
            layout.append((name, key, shapes[key]))
        parts.append(torch.tensor([float(acc.n)], dtype=torch.float64))
        layout.append((name, None, [1]))
    flat = torch.cat(parts).to(device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat.cpu()
    pos = 0
    for name, key, shape in layout:
        size = 1
        for d in shape:
            size *= int(d)
        chunk = flat[pos : pos + size].reshape(shape)
        pos += size
        if key is None:
            accs[name].n = int(round(float(chunk[0])))
        else:
            accs[name].sums[key] = chunk.clone()


def _what_changed(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """What differs between a saved fingerprint and this run's, in words: 'the image files changed', 'batch_size 16 -> 8'."""
    words = {"world_size": "the number of processes", "models": "the models or their weights", "settings": "the analysis settings",
             "version": "the freqkit state format"}
    out = []
    for key in now:
        a, b = saved.get(key), now[key]
        if a == b:
            continue
        if key == "data" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in b:
                if a.get(k) == b[k]:
                    continue
                if k == "files":
                    out.append("the image files changed (a file was renamed, added, removed or resized)")
                else:
                    out.append(f"{k} {a.get(k)!r} -> {b[k]!r}")
        else:
            out.append(f"{words.get(key, key)} {a!r} -> {b!r}" if key in ("world_size", "version") else f"{words.get(key, key)} changed")
    return "; ".join(out) or "the saved run's fingerprint"


def _check_process_count(state_dir: Path, world: int) -> None:
    """Statistics saved by another number of processes cannot be resumed (each rank's shard would differ): say so."""
    import re

    counts = sorted({int(m.group(1)) for f in state_dir.glob("analyze-state-rank*of*.pt") if (m := re.search(r"of(\d+)\.pt$", f.name))})
    if counts and world not in counts:
        raise FreqkitError(
            f"the statistics in {str(state_dir)!r} were saved by {counts[0]} processes, this run has {world}; resume with "
            f"{counts[0]} processes (torchrun --nproc_per_node {counts[0]}), or pass resume=False to start again"
        )


def analyze(
    models: Models,
    data: Any = "builtin",
    *,
    attention: bool = False,
    layers: Optional[Sequence[str]] = None,
    cutoff: float = 0.5,
    bins: int = 16,
    batch_size: Optional[int] = None,
    num_workers: int = 0,
    max_images: Optional[int] = None,
    img_size: Union[int, Sequence[int], None] = None,
    cka: bool = True,
    erf: Union[bool, Sequence[str]] = False,
    methods: bool = True,
    chunk_size: int = 256,
    progress: bool = False,
    state_dir: Union[str, Path, None] = None,
    save_every: int = 50,
    resume: bool = False,
    info: Optional[Mapping[str, Mapping[str, Any]]] = None,
    settings: Optional[Mapping[str, Any]] = None,
    check_headers: bool = True,
) -> Report:
    """Spectral diagnostics of ``models`` over the images of ``data`` -> :class:`Report`.

    ``data``: a tensor (B, 3, H, W); a Dataset of images (3, H, W) or (image, target) items; a
    DataLoader or any iterable of (B, 3, H, W) batches (or (images, targets) pairs); a folder path,
    read recursively and preprocessed with the first model's timm data config (resize, centre crop,
    mean / std; ``img_size`` overrides the size); or "builtin" (scikit-image's photographs).
    ``max_images`` limits the count (default all); ``batch_size`` (default: a tensor at once, else 16)
    and ``num_workers`` apply to tensors, Datasets and folders.

    ``models`` is one model, a dict name -> model, or a list (named by architecture; repeats get
    ``-2``...); a timm / freqkit model name builds that model at random init (use
    :func:`freqkit.models.create` for pretrained weights or a checkpoint). Every model sees every batch, in eval mode (restored after) on its own device and
    dtype. ``attention`` adds the attention responses and per-head maps; ``layers`` picks module
    names (default: every ViT block or stage); ``cka`` the linear CKA matrices (layer x layer, and
    model x model with several models); ``erf`` the effective receptive field of 4 evenly spaced
    layers (True) or of the named layers (one backward pass per layer and batch). ``methods`` adds the
    figures of what FDAM / SPAM modules apply (AttInv modulation, FreqScale gain, SPAM filters, AttInv
    responses) and one layer's feature maps, from the first 4 images of the first batch; only the kinds
    whose modules the models have are computed (``Report.methods["applies"]``).

    Under torchrun (an initialised torch.distributed group) each rank analyses its shard and the
    statistics are summed over ranks; every rank returns the same report. With ``state_dir`` the
    statistics are saved there (atomically, one file per rank) every ``save_every`` batches and at
    the end; ``resume`` continues from them, and refuses statistics of other work (other models, settings,
    image files or process count). ``info`` adds per-model facts, ``settings`` run settings. ``check_headers``
    (folders): read every image's header before the first batch, so a bad file fails at once (off for huge folders).
    When one rank fails, every rank stops with one line naming it.
    """
    pairs = _named_models(models, img_size)
    for name, m in pairs:
        if _device_dtype(m)[0].type == "meta":
            raise FreqkitError(f"model {name} is on the meta device (shapes only); materialize its weights (to_empty + init, or a checkpoint) to analyze it")
    if not 0.0 <= float(cutoff) <= 1.5:
        raise FreqkitError(f"cutoff {cutoff} is outside [0, 1.5]; the normalized radius is 1 at the Nyquist frequency, default 0.5")
    if int(bins) != bins or int(bins) < 1:
        raise FreqkitError(f"bins must be a positive int, got {bins!r}")
    check_limit("bins", int(bins), "bins", " rings")
    if int(save_every) < 1:
        raise FreqkitError(f"save_every must be a positive number of batches, got {save_every!r}")
    if resume and state_dir is None:
        raise FreqkitError("resume=True needs state_dir, the folder the interrupted run saved its statistics to")
    if state_dir is not None:
        check_writable_dir(state_dir, "state_dir")  # before any image is read, not after the whole pass
    rank, world = rank_world()
    with together("analyze"):  # a rank that fails stops every rank, before the statistics are summed
        source = make_source(
            data, batch_size=batch_size, num_workers=num_workers, max_images=max_images, model=pairs[0][1], img_size=img_size,
            rank=rank, world=world, check_headers=check_headers,
        )
        accs = {name: _Accumulator() for name, _ in pairs}
        joint = _Accumulator()
        run_settings = {
            "cutoff": float(cutoff), "bins": int(bins), "attention": bool(attention), "layers": None if layers is None else list(layers),
            "cka": bool(cka), "erf": erf if isinstance(erf, bool) else list(erf), "max_images": max_images, "img_size": img_size,
        }
        fingerprint = {
            "version": _STATE_VERSION, "world_size": world, "rank": rank, "data": source.fingerprint, "settings": repr(run_settings),
            "models": [[n, type(m).__name__, _weights_digest(m)] for n, m in pairs],
        }
        state_path = None if state_dir is None else Path(state_dir) / f"analyze-state-rank{rank}of{world}.pt"
        position = 0
        first_images: Optional[torch.Tensor] = None
        if resume:
            assert state_path is not None
            if not state_path.is_file():
                _check_process_count(Path(state_dir), world)  # type: ignore[arg-type]
            if state_path.is_file():
                saved = load_state(state_path)
                if saved.get("fingerprint") != fingerprint:
                    raise FreqkitError(
                        f"the statistics in {str(state_path)!r} were saved by a different run ({_what_changed(saved.get('fingerprint') or {}, fingerprint)}); "
                        "resume with the same models, images, settings and number of processes, or pass resume=False"
                    )
                position = int(saved["position"])
                for name, st in saved["models"].items():
                    accs[name].load(st)
                joint.load(saved["joint"])
                first_images = saved.get("first_images")  # the method figures of a resume that has nothing left to read

        def save() -> None:
            if state_path is not None:
                atomic_save(
                    {"fingerprint": fingerprint, "position": position, "models": {k: a.state() for k, a in accs.items()}, "joint": joint.state(),
                     "first_images": first_images},
                    state_path,
                )

        bar = None

        def new_bar() -> Any:
            from tqdm.auto import tqdm

            desc = "analyze" if world == 1 else f"analyze (rank 0 of {world})"
            # images per second and the time left come from tqdm's rate; smoothing follows recent batches
            return tqdm(total=source.total, initial=accs[pairs[0][0]].n, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.1)
        modes = [m.training for _, m in pairs]
        erf_names: dict[str, list[str]] = {}
        batches = 0
        try:
            for _, m in pairs:
                m.eval()
            for images, position in source.batches(position):
                b = int(images.shape[0])
                if images.device.type == "meta" or not bool(torch.isfinite(images).all()):
                    raise FreqkitError("analyze: the images hold NaN or inf (or are on the meta device); pass finite real-valued images")
                if first_images is None and methods:
                    first_images = images[:4].detach().cpu()
                if bar is None and progress and rank == 0:
                    bar = new_bar()  # after the first batch arrived: a source that fails at once prints one line
                model_maps: list[Optional[list[torch.Tensor]]] = []
                for name, model in pairs:
                    device, dtype = _device_dtype(model)
                    batch = images.to(device=device, dtype=dtype or images.dtype, non_blocking=True)
                    acc = accs[name]
                    cap = capture(model, batch, attention=attention, layers=layers)
                    _check_finite(cap, name)
                    with torch.no_grad():
                        model_maps.append(_batch_stats(cap, acc, float(cutoff), int(bins), int(chunk_size), bool(cka)))
                    del cap
                    if erf:
                        if name not in erf_names:
                            erf_names[name] = _erf_layers(erf, acc.meta)
                        index = {m["name"]: i for i, m in enumerate(acc.meta)}
                        _add_erf(model, batch, erf_names[name], index, acc)
                    acc.n += b
                    acc.image_size = [int(images.shape[-2]), int(images.shape[-1])]
                if cka and len(pairs) > 1 and all(mm is not None for mm in model_maps):
                    grid = _coarsest([tuple(mm[0].shape[-2:]) for mm in model_maps])  # type: ignore[index]
                    if grid[0] * grid[1] >= 4:
                        # every model's maps on one grid (and one device), in model order: the joint matrix's blocks
                        flat_maps = [_pool(m, grid) for mm in model_maps for m in mm]  # type: ignore[union-attr]
                        if len({m.device for m in flat_maps}) > 1:
                            flat_maps = [m.cpu() for m in flat_maps]
                        joint.add(-1, "hsic", _hsic_sum(flat_maps))
                        joint.n += b
                del model_maps
                batches += 1
                if bar is not None:
                    bar.update(b)
                if state_path is not None and batches % int(save_every) == 0:
                    save()
            save()
        finally:
            for (_, m), mode in zip(pairs, modes):
                m.train(mode)
            if bar is not None:
                bar.close()

    if world > 1:
        _reduce({**accs, _JOINT: joint})
    total = accs[pairs[0][0]].n
    if total == 0:
        raise FreqkitError("analyze got no images; pass a non-empty tensor, Dataset, DataLoader or folder")
    image_size = accs[pairs[0][0]].image_size

    reports = []
    for name, model in pairs:
        acc = accs[name]
        model_info = {
            "class": type(model).__name__,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "num_layers": len(acc.meta),
            "image_size": image_size,
            "num_images": acc.n,
            "attention": bool(attention) and any(m["heads"] > 0 for m in acc.meta),
        }
        model_info.update(dict((info or {}).get(name, {})))
        reports.append(_finish(name, acc, int(bins), model_info))
    model_cka = []
    hsic = joint.sums.get("-1/hsic")
    if hsic is not None:
        mat = S.cka_from_hsic(hsic)
        offsets, start = [], 0
        for name, _ in pairs:
            offsets.append((name, start, start + len(accs[name].meta)))
            start += len(accs[name].meta)
        grid = _coarsest([_coarsest([m["grid_size"] for m in accs[n].meta]) for n, _ in pairs])
        for i, (na, a0, a1) in enumerate(offsets):
            for nb, b0, b1 in offsets[i + 1 :]:
                model_cka.append({"a": na, "b": nb, "grid": list(grid), "matrix": mat[a0:a1, b0:b1].tolist()})

    all_settings: dict[str, Any] = {
        "cutoff": float(cutoff),
        "bins": int(bins),
        "global_response_mode": "aggregate",
        "spectrum_eps": 1e-6,
        "effective_rank_center": False,
        "cosine_absolute": True,
        "tokens": "spatial (prefix tokens dropped)",
        "cka_samples": "spatial tokens, one image per mini-batch (unbiased HSIC)" if cka else None,
        "attention": bool(attention),
        "erf": bool(erf) if isinstance(erf, bool) else list(erf),
        "layers": None if layers is None else list(layers),
        "image_size": image_size,
        "num_images": total,
        "images": source.describe,
        "batch_size": None if batch_size is None else int(batch_size),
        "processes": world,
        "models": [n for n, _ in pairs],
    }
    all_settings.update(dict(settings or {}))
    method_data = None
    if methods and first_images is not None:
        from freqkit.analysis.methods import method_figures_data

        device, dtype = _device_dtype(pairs[0][1])
        x = first_images.to(device=device, dtype=dtype or first_images.dtype)
        method_data = method_figures_data(dict(pairs), x, num_images=int(x.shape[0]))
    return Report(models=reports, settings=all_settings, model_cka=model_cka, methods=method_data)

