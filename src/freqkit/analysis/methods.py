"""What the frequency modules of a model apply during a forward pass, as JSON-ready data for figures.

These are the method visualizations of the FDAM supplementary (Section H, Figs. 2-3 and 7-9) and of
SPANet / SPANetV2, captured with hooks that only read (the model's outputs are unchanged):

- :func:`attinv_modulation`: AttInv's per-position high-pass weight (Fig. 7);
- :func:`freqscale_gain`: FreqScale's applied gain per frequency (Fig. 8);
- :func:`features`: one layer's feature map and its log-amplitude spectrum per model (Fig. 9);
- :func:`spam_filters`: SPANet's fixed spectral masks and SPANetV2's learned spectral gains;
- :func:`attinv_response`: local frequency responses of A, I - A and AttInv's learned combination,
  and of a two-layer stack (Figs. 2-3, supplementary eq. 25).

:func:`method_figures_data` gathers the ones that apply to a set of models;
``freqkit.analysis.method_plots.plot_method_figures`` draws them. Every value in the returned
dicts is a plain int, float, str, None or (nested) list, so ``json.dumps`` takes them as they are.

Conventions: 2-D spectra and gains are centred (``fftshift``: DC at index (H // 2, W // 2)). A real
filter f on the ``rfft2`` half-plane (H, W // 2 + 1) is shown as the full (H, W) plane g with
``ifft2(fft2(x) * g).real == irfft2(rfft2(x) * f, s=(H, W))`` for real x: g mirrors f onto the
negative frequencies, and on the self-conjugate columns (DC and, for even W, Nyquist) it is the
average of f at k and -k, because ``irfft2`` keeps only the real part there (:func:`full_plane`).
"""
from __future__ import annotations

import contextlib
import inspect
import math
import re
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.spectral import local_response, radial_profile, spectrum

__all__ = [
    "METHOD_FIGURES",
    "attinv_modulation",
    "freqscale_filters",
    "freqscale_gain",
    "features",
    "spam_filters",
    "attinv_response",
    "method_figures_data",
    "full_plane",
    "circulant",
    "layer_kernel",
    "stack_response",
    "gaussian_stencil",
]

METHOD_FIGURES = ("attinv_modulation", "freqscale_gain", "features", "spam_filters", "attinv_response")

Images = torch.Tensor
Models = Union[nn.Module, Mapping[str, nn.Module]]

# display copies of the input images kept in the data (for overlays) are at most this many pixels a side
_DISPLAY_MAX_SIDE = 160


# =============================================================================== layer access
# Everything that reads a layer's internals sits in the small functions of this section, one per
# module type, so that a change of a layer's attributes needs a change here only.


def _layer_types() -> dict[str, type]:
    from freqkit.layers.attinv import AttInv
    from freqkit.layers.freqscale import FreqScale
    from freqkit.layers.spam import SPAM
    from freqkit.layers.spam_v2 import SPAMv2

    return {"attinv": AttInv, "freqscale": FreqScale, "spam": SPAM, "spamv2": SPAMv2}


def _attinv_context(args: tuple, kwargs: dict) -> Any:
    """The AttentionContext of an AttInv call ``filter(out, ctx)`` (positional or keyword)."""
    ctx = kwargs.get("ctx", args[1] if len(args) > 1 else None)
    if ctx is None or not hasattr(ctx, "x"):
        raise FreqkitError("attinv visualization: the AttInv layer was called without its attention context (out, ctx)")
    return ctx


def _attinv_coefficients(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token, per-head applied coefficients from the attention input x (B, N, C), float32 (B, N, heads).

    high = Sh * mean over the head's channels of g_hf (the weight of (I - A) V), low = 1 + Sl * mean of
    g_lf (the weight of A V). A head's gate is shared by its channels, so the mean over heads of these
    is the mean over all channels of g_hf[c] Sh[head(c)] (resp. 1 + g_lf[c] Sl[head(c)]).
    """
    sl, sh = layer.gates(x)
    heads = int(layer.num_heads)
    g_hf = layer.hf_gamma.detach().float().view(heads, -1).mean(dim=1)
    g_lf = layer.lf_gamma.detach().float().view(heads, -1).mean(dim=1)
    return sh.float() * g_hf, 1.0 + sl.float() * g_lf


def _freqscale_half_filter(module: nn.Module, xs: torch.Tensor) -> torch.Tensor:
    """The real filter W (B or 1, H, W // 2 + 1, C) FreqScale multiplies the rfft2 of xs (B, H, W, C) by."""
    return module.spectral_weight(xs).float()


def _freqscale_mode(module: nn.Module) -> str:
    return str(getattr(module, "mode", "unknown"))


def _freqscale_tokens_to_map(args: tuple, kwargs: dict, orig: Callable) -> Optional[torch.Tensor]:
    """The channels-last map (B, H, W, C) that ``apply_tokens(t, grid_size, num_prefix_tokens)`` filters."""
    bound = inspect.signature(orig).bind(*args, **kwargs)
    bound.apply_defaults()
    values = list(bound.arguments.values())
    t = values[0]
    grid = bound.arguments.get("grid_size")
    p = int(bound.arguments.get("num_prefix_tokens") or 0)
    if grid is None or not isinstance(t, torch.Tensor) or t.ndim != 3:
        return None
    h, w = int(grid[0]), int(grid[1])
    if t.shape[1] != p + h * w:
        return None
    return t[:, p:].reshape(t.shape[0], h, w, t.shape[-1])


def _spam_masks(module: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """SPAM's fixed masks at grid ``size``, centred (branches, H, W), with their radius and lambdas."""
    masks = torch.stack([module.mask(size, i, shifted=True) for i in range(len(module.lambdas))])
    return {"masks": masks.float(), "radius": float(module.radius), "lambdas": [float(v) for v in module.lambdas]}


def _spamv2_gains(module: nn.Module, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """SPAMv2's applied gains on the rfft2 half-plane, (scales, channels per scale, H, W // 2 + 1), and the gain kind."""
    gains = module.gains(size).float()
    n = int(module.num_scales)
    return gains.reshape(n, gains.shape[0] // n, *gains.shape[1:]), str(getattr(module, "gain", "sigmoid"))


def _mixer_grid(kind: str, x: torch.Tensor) -> tuple[int, int]:
    """Spatial size of a token mixer's input: SPAM takes (B, C, H, W), SPAMv2 channels-last (B, H, W, C)."""
    return (int(x.shape[-2]), int(x.shape[-1])) if kind == "spam" else (int(x.shape[1]), int(x.shape[2]))


# =============================================================================== helpers


def _named(models: Models) -> list[tuple[str, nn.Module]]:
    if isinstance(models, nn.Module):
        return [(type(models).__name__, models)]
    if isinstance(models, Mapping) and models and all(isinstance(m, nn.Module) for m in models.values()):
        return [(str(k), m) for k, m in models.items()]
    raise FreqkitError("models must be an nn.Module or a non-empty dict name -> nn.Module")


def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise FreqkitError(f"{name} must be a batch (B, 3, H, W) with B >= 1, got {shape}; add a batch dimension with x[None]")


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(model.parameters()), None)
    if p is None or not p.is_floating_point():
        return torch.device("cpu"), torch.float32
    return p.device, p.dtype


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    device, dtype = _device_dtype(model)
    with _eval(model), torch.no_grad():
        return model(images.to(device=device, dtype=dtype))


def _modules_of(model: nn.Module, kind: str) -> list[tuple[str, nn.Module]]:
    cls = _layer_types()[kind]
    return [(n, m) for n, m in model.named_modules() if isinstance(m, cls)]


def _token_grid(model: nn.Module, num_tokens: int, image_hw: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """((H, W), prefix count) of a ViT token sequence of ``num_tokens`` tokens from images of size image_hw."""
    given = getattr(model, "num_prefix_tokens", None)
    candidates = [int(given)] if isinstance(given, int) else list(range(0, 9))
    ih, iw = image_hw
    for p in candidates:
        n = num_tokens - p
        if n <= 0:
            continue
        patch = math.sqrt(ih * iw / n)
        h, w = round(ih / patch), round(iw / patch)
        if h * w == n:
            return (h, w), p
    raise FreqkitError(
        f"attinv visualization: cannot lay {num_tokens} tokens out on a grid for {ih}x{iw} images; "
        "the model's patch grid does not match the image size"
    )


def _to_list(t: torch.Tensor) -> Any:
    return t.detach().float().cpu().tolist()


def _display_images(images: torch.Tensor, display: Optional[torch.Tensor], count: int) -> list:
    """Up to ``count`` images as uint8 (n, H', W', 3) lists, at most _DISPLAY_MAX_SIDE a side.

    ``display`` (B, 3, H, W) in [0, 1] is shown as given; without it each model input is min-max scaled.
    """
    src = display if display is not None else images
    _check_images(src, "display" if display is not None else "images")
    x = src[:count].detach().float().cpu()
    if display is None:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp(min=1e-12)
    h, w = x.shape[-2:]
    scale = _DISPLAY_MAX_SIDE / max(h, w)
    if scale < 1:
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).tolist()


def full_plane(half: torch.Tensor, width: int) -> torch.Tensor:
    """Real rfft2 half-plane filter (..., H, W // 2 + 1) -> the equivalent full-plane filter (..., H, W), uncentred.

    For real x: ``ifft2(fft2(x) * full_plane(f, W)).real == irfft2(rfft2(x) * f, s=(H, W))``.
    """
    h, rw = half.shape[-2], half.shape[-1]
    if rw != width // 2 + 1:
        raise FreqkitError(f"full_plane: a half-plane of {rw} columns does not belong to width {width} (needs {width // 2 + 1})")
    neg = (-torch.arange(h, device=half.device)) % h  # row of -k1
    out = torch.empty(*half.shape[:-1], width, dtype=half.dtype, device=half.device)
    out[..., :rw] = half
    if width > rw:
        cols = torch.arange(rw, width, device=half.device)
        out[..., rw:] = half[..., neg, :][..., width - cols]
    # irfft2 drops the imaginary part on the self-conjugate columns: the filter there acts as its even part
    for c in [0] + ([width // 2] if width % 2 == 0 else []):
        out[..., c] = 0.5 * (half[..., c] + half[..., neg, c])
    return out


# =============================================================================== AttInv modulation


def _attinv_taps(model: nn.Module, store: dict, keep: Callable[[str], bool], want_attention: Callable[[str], bool]) -> list:
    """Pre-hooks on AttInv layers filling store[name] with high / low (B, N, heads) and, if wanted, A (B, heads, N, N)."""
    handles = []
    for name, layer in _modules_of(model, "attinv"):
        if not keep(name):
            continue

        def hook(mod: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            ctx = _attinv_context(args, kwargs)
            with torch.no_grad():
                high, low = _attinv_coefficients(mod, ctx.x)
                rec = {"high": high.cpu(), "low": low.cpu()}
                if want_attention(name):
                    b, n = ctx.x.shape[0], ctx.x.shape[1]
                    heads = high.shape[-1]
                    eye = torch.eye(n, dtype=ctx.v.dtype, device=ctx.v.device).expand(b, heads, n, n).contiguous()
                    # A applied to the identity is A itself: the attention the layer actually uses (mask, fused or not)
                    rec["attention"] = ctx.attend(eye).float().cpu()
            store.setdefault(name, {}).update(rec)

        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def _spam_taps(model: nn.Module, sizes: dict) -> list:
    """Pre-hooks on SPAM / SPAMv2 mixers recording sizes[name] = (kind, (H, W)) of their first call."""
    handles = []
    for kind in ("spam", "spamv2"):
        for name, mod in _modules_of(model, kind):

            def hook(m: nn.Module, args: tuple, name: str = name, kind: str = kind) -> None:
                if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
                    sizes.setdefault(name, (kind, _mixer_grid(kind, args[0])))

            handles.append(mod.register_forward_pre_hook(hook))
    return handles


def _capture(model: nn.Module, images: torch.Tensor, *, attinv: bool = False, freqscale: bool = False, spam: bool = False,
             attinv_keep: Callable[[str], bool] = lambda n: True, attention_for: Sequence[str] = ()) -> dict[str, Any]:
    """One hooked forward of ``model`` on images, recording what the selected module kinds apply (outputs unchanged)."""
    cap: dict[str, Any] = {"attinv": {}, "freqscale": {}, "spam": {}, "grid": (0, 0), "prefix": 0}
    handles: list = []
    with contextlib.ExitStack() as stack:
        try:
            if attinv:
                handles += _attinv_taps(model, cap["attinv"], attinv_keep, lambda n: n in attention_for)
            if spam:
                handles += _spam_taps(model, cap["spam"])
            if freqscale:
                cap["freqscale"] = stack.enter_context(_freqscale_taps(model))
            if handles or freqscale:
                _forward(model, images)
        finally:
            for h in handles:
                h.remove()
    if cap["attinv"]:
        n = next(iter(cap["attinv"].values()))["high"].shape[1]
        cap["grid"], cap["prefix"] = _token_grid(model, int(n), (int(images.shape[-2]), int(images.shape[-1])))
    return cap


def _attinv_result(store: dict, grid: tuple[int, int], p: int, images: torch.Tensor, display: Optional[torch.Tensor], num_images: int) -> Optional[dict[str, Any]]:
    if not store:
        return None
    h, w = grid
    names = list(store)
    highs = [store[n]["high"].mean(dim=-1)[:, p:].reshape(-1, h, w) for n in names]
    lows = [store[n]["low"].mean(dim=-1)[:, p:].reshape(-1, h, w) for n in names]
    k = int(num_images)
    return {
        "layers": names,
        "grid": [h, w],
        "num_prefix_tokens": p,
        "high": [_to_list(m[:k]) for m in highs],
        "low": [_to_list(m[:k]) for m in lows],
        "high_mean": [float(m.mean()) for m in highs],
        "high_std": [float(m.std(unbiased=False)) for m in highs],
        "images": _display_images(images, display, k),
        "definition": "high = mean over channels c of g_hf[c] * Sh[token, head(c)]; low = mean over channels of 1 + g_lf[c] * Sl[token, head(c)]",
    }


def attinv_modulation(model: nn.Module, images: Images, *, display: Optional[Images] = None, num_images: int = 4) -> Optional[dict[str, Any]]:
    """AttInv's per-position weights for images (B, 3, H, W): per layer "high" and "low" (n, h, w) maps; None without AttInv.

    "high" is the high-pass weight the layer applies at each spatial token: the mean over all channels
    of g_hf[c] * Sh[token, head(c)] (equivalently, over heads of Sh times the head's mean g_hf), the
    coefficient of (I - A) V. "low" is the mean over channels of 1 + g_lf[c] Sl[token, head(c)], the
    coefficient of A V. Maps are on the token grid (prefix tokens dropped) for the first ``num_images``
    images; "high_mean" / "high_std" per layer summarize all B images. ``display`` (B, 3, H, W) in
    [0, 1] are the images to overlay (default: the inputs, min-max scaled).
    """
    _check_images(images)
    cap = _capture(model, images, attinv=True)
    return _attinv_result(cap["attinv"], cap["grid"], cap["prefix"], images, display, num_images)


# =============================================================================== FreqScale gain


@contextlib.contextmanager
def _freqscale_taps(model: nn.Module) -> Iterator[dict[str, list[tuple[torch.Tensor, tuple[int, int]]]]]:
    """Record, per FreqScale module, the filter W (B or 1, H, W // 2 + 1, C) it applies and the grid, for every call.

    FreqScale is called either as a module on a (B, C, H, W) map (a forward pre-hook sees it) or through
    ``apply_tokens`` on tokens (wrapped on the instance for the duration; the wrapper only reads).
    """
    store: dict[str, list] = {}
    handles, wrapped = [], []
    for name, mod in _modules_of(model, "freqscale"):
        inside = [False]

        def record(m: nn.Module, xs: torch.Tensor, name: str = name) -> None:
            with torch.no_grad():
                store.setdefault(name, []).append((_freqscale_half_filter(m, xs).cpu(), (int(xs.shape[1]), int(xs.shape[2]))))

        def pre_hook(m: nn.Module, args: tuple, inside=inside, record=record) -> None:
            if not inside[0] and args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
                record(m, args[0].permute(0, 2, 3, 1))

        handles.append(mod.register_forward_pre_hook(pre_hook))
        orig = getattr(mod, "apply_tokens", None)
        if callable(orig):

            def apply_tokens(*args: Any, orig=orig, mod=mod, inside=inside, record=record, **kwargs: Any) -> torch.Tensor:
                xs = _freqscale_tokens_to_map(args, kwargs, orig)
                if xs is not None:
                    record(mod, xs)
                inside[0] = True
                try:
                    return orig(*args, **kwargs)
                finally:
                    inside[0] = False

            mod.apply_tokens = apply_tokens
            wrapped.append(mod)
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
        for mod in wrapped:
            del mod.apply_tokens


def _freqscale_full(store: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, calls in store.items():
        half, (h, w) = calls[0]
        if len(calls) > 1:  # a module applied several times per forward: all its calls, one after the other
            half = torch.cat([c[0] for c in calls if c[1] == (h, w)])
        full = full_plane(half.permute(0, 3, 1, 2), w)
        out[name] = torch.fft.fftshift(1.0 + full, dim=(-2, -1))
    return out


def freqscale_filters(model: nn.Module, images: Images) -> dict[str, torch.Tensor]:
    """Per FreqScale module, the applied full-plane gain 1 + W, centred, float32 (B, C, H, W) (B = 1 for static)."""
    _check_images(images)
    return _freqscale_full(_capture(model, images, freqscale=True)["freqscale"])


def _freqscale_result(model: nn.Module, filters: dict[str, torch.Tensor]) -> Optional[dict[str, Any]]:
    if not filters:
        return None
    modes = dict((n, _freqscale_mode(m)) for n, m in _modules_of(model, "freqscale"))
    entries = []
    for name, gain in filters.items():
        per_image = gain.mean(dim=1)  # (B, h, w): mean over channels
        mode = modes.get(name, "unknown")
        entries.append({
            "name": name,
            "mode": mode,
            "grid": [int(per_image.shape[-2]), int(per_image.shape[-1])],
            "mean": _to_list(per_image.mean(dim=0)),
            "std": None if mode == "static" else _to_list(per_image.std(dim=0, unbiased=False)),
            "num_images": int(per_image.shape[0]),
        })
    return {
        "modules": entries,
        "definition": "gain = 1 + W on the full centred frequency plane (DC at the centre), mean over channels; "
        "mean and population std over images",
    }


def freqscale_gain(model: nn.Module, images: Images) -> Optional[dict[str, Any]]:
    """FreqScale's applied gain per frequency for images (B, 3, H, W): per module the centred (h, w) mean and spread; None without FreqScale.

    The gain 1 + W (the module's output plus its input, FS(t) = t + filtered(t), is irfft2(rfft2(t) * (1 + W)))
    is averaged over channels for each image; "mean" is its mean over the images, "std" the population
    standard deviation over the images (None in static mode, where the filter does not depend on the image).
    """
    _check_images(images)
    return _freqscale_result(model, freqscale_filters(model, images))


# =============================================================================== features


def _feature_index(model: nn.Module) -> tuple[int, Optional[int]]:
    """(index for forward_intermediates, its stride): the deepest level of stride <= 16 (ViT blocks: the last block)."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and all(isinstance(d, dict) for d in info):
        best = None
        for i, d in enumerate(info):
            red = d.get("reduction")
            if red is not None and red <= 16:
                best = (i, int(red))
        if best is not None:
            return best
        return len(info) - 1, info[-1].get("reduction")
    return -1, None


def _feature_map(model: nn.Module, images: torch.Tensor, index: Optional[int]) -> tuple[torch.Tensor, int, Optional[int]]:
    """One level's feature maps (B, C, h, w) float32 via the model's ``forward_intermediates``."""
    fi = getattr(model, "forward_intermediates", None)
    if not callable(fi):
        raise FreqkitError(f"features: {type(model).__name__} has no forward_intermediates; pass a timm / freqkit backbone")
    auto, stride = _feature_index(model)
    idx = auto if index is None else int(index)
    device, dtype = _device_dtype(model)
    with _eval(model), torch.no_grad():
        if idx < 0:
            maps = fi(images.to(device=device, dtype=dtype), indices=1, intermediates_only=True)
        else:
            maps = fi(images.to(device=device, dtype=dtype), indices=[idx], intermediates_only=True)
    m = maps[-1]
    if m.ndim != 4:
        raise FreqkitError(f"features: {type(model).__name__}.forward_intermediates gave shape {tuple(m.shape)}, expected (B, C, h, w)")
    return m.float().cpu(), idx, stride if index is None else None


def features(models: Models, images: Images, *, display: Optional[Images] = None, num_images: int = 4,
             index: Optional[Mapping[str, int]] = None) -> Optional[dict[str, Any]]:
    """Per model, one layer's feature map reduced to (n, h, w) and its centred log-amplitude spectrum (n, h, w).

    The layer is the deepest level of stride <= 16 (a ViT's last block, a staged network's stride-16
    stage), or ``index[name]`` (a ``forward_intermediates`` index). Each image's map is divided by its
    RMS over channels and positions (so models of different feature scale share one colour scale).
    "map" is the channel-wise L2 norm per token divided by sqrt(C) (the token RMS): unlike a first
    principal component it has no sign ambiguity and no per-model basis, so maps of different models are
    comparable on one scale. "spectrum" is ``freqkit.spectral.spectrum`` of the normalized C-channel map
    (mean over channels of log |fftshift(fft2)|), i.e. of all channels, not of the reduced map.
    """
    _check_images(images)
    k = int(num_images)
    out: dict[str, Any] = {"models": [], "layer": {}, "stride": {}, "map": {}, "spectrum": {}}
    for name, model in _named(models):
        try:
            fmap, idx, stride = _feature_map(model, images[:k], (index or {}).get(name))
        except FreqkitError:
            continue
        rms = fmap.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)
        x = fmap / rms
        out["models"].append(name)
        out["layer"][name] = idx
        out["stride"][name] = stride
        out["map"][name] = _to_list(x.square().mean(dim=1).sqrt())
        out["spectrum"][name] = _to_list(torch.stack([spectrum(x[i : i + 1]) for i in range(x.shape[0])]))
    if not out["models"]:
        return None
    out["images"] = _display_images(images, display, k)
    out["definition"] = ("map = token RMS over channels of the feature map divided by its RMS over the image; "
                         "spectrum = mean over channels of log(|fftshift(fft2)| + 1e-6) of that normalized map")
    return out


# =============================================================================== SPAM filters


def _stage_of(name: str) -> Optional[int]:
    m = re.search(r"(?:^|\.)stages\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def spam_filters(model: nn.Module, images: Images) -> Optional[dict[str, Any]]:
    """SPANet's fixed SPF masks and SPANetV2's learned gains per stage, at the grids of images (B, 3, H, W); None without SPAM.

    "spam": per stage the centred (branches, h, w) masks (one per lambda), with the radius. "spamv2": per
    stage the centred full-plane (scales, h, w) gains as applied (after the sigmoid), each the mean over
    that scale's channels and over the stage's blocks.
    """
    _check_images(images)
    return _spam_result(model, _capture(model, images[:1], spam=True)["spam"])


def _spam_result(model: nn.Module, sizes: dict) -> Optional[dict[str, Any]]:
    if not sizes:
        return None
    modules = dict(model.named_modules())
    order = list(sizes)
    v1: dict[int, dict[str, Any]] = {}
    v2: dict[int, dict[str, Any]] = {}
    for pos, name in enumerate(order):
        kind, size = sizes[name]
        stage = _stage_of(name)
        stage = pos if stage is None else stage
        if kind == "spam":
            if stage not in v1:
                m = _spam_masks(modules[name], size)
                v1[stage] = {"stage": stage, "size": list(size), "radius": m["radius"], "lambdas": m["lambdas"],
                             "masks": _to_list(m["masks"]), "blocks": 0}
            v1[stage]["blocks"] += 1
        else:
            gains, gain_kind = _spamv2_gains(modules[name], size)
            full = torch.fft.fftshift(full_plane(gains, size[1]), dim=(-2, -1)).mean(dim=1)  # (scales, h, w)
            rec = v2.setdefault(stage, {"stage": stage, "size": list(size), "gain": gain_kind, "sum": 0, "blocks": 0})
            rec["sum"] = rec["sum"] + full
            rec["blocks"] += 1
    for rec in v2.values():
        rec["gains"] = _to_list(rec.pop("sum") / rec["blocks"])
    return {
        "spam": [v1[s] for s in sorted(v1)],
        "spamv2": [v2[s] for s in sorted(v2)],
        "definition": "spam: SPF masks M(k) (lambda inside |k| < r, 1/3 on |k| = r, 1 - lambda outside), centred; "
        "spamv2: applied gains sigmoid(theta) on the full centred plane, mean over each scale's channels and the stage's blocks",
    }


# =============================================================================== AttInv response


def circulant(stencil: torch.Tensor) -> torch.Tensor:
    """Periodic convolution by a stencil (H, W) as a token matrix (H*W, H*W): K[q, k] = stencil[(k - q) mod (H, W)]."""
    if stencil.ndim != 2:
        raise FreqkitError(f"circulant: stencil must be (H, W), got {tuple(stencil.shape)}")
    h, w = stencil.shape
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    qy, qx = qy.reshape(-1), qx.reshape(-1)
    dy = (qy[None, :] - qy[:, None]) % h
    dx = (qx[None, :] - qx[:, None]) % w
    return stencil[dy, dx]


def gaussian_stencil(grid: tuple[int, int], sigma: float) -> torch.Tensor:
    """Periodic Gaussian attention stencil (H, W) centred at token 0, summing to 1 (a low-pass kernel)."""
    h, w = int(grid[0]), int(grid[1])
    dy = torch.arange(h, dtype=torch.float64)
    dx = torch.arange(w, dtype=torch.float64)
    dy, dx = torch.minimum(dy, h - dy), torch.minimum(dx, w - dx)
    g = torch.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def layer_kernel(attn: torch.Tensor, low: Union[float, torch.Tensor], high: Union[float, torch.Tensor]) -> torch.Tensor:
    """AttInv's token operator for attention (..., N, N): low * A + high * (I - A) (low, high per query row or scalars)."""
    n = attn.shape[-1]
    eye = torch.eye(n, dtype=attn.dtype, device=attn.device)
    low = torch.as_tensor(low, dtype=attn.dtype, device=attn.device)
    high = torch.as_tensor(high, dtype=attn.dtype, device=attn.device)
    if low.ndim:
        low = low[..., None]
    if high.ndim:
        high = high[..., None]
    return low * attn + high * (eye - attn)


def stack_response(first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int], query: int) -> torch.Tensor:
    """Local response |F(row q of second @ first)| (H, W), centred, of applying token operators (N, N) ``first`` then ``second``.

    For shift-invariant (circulant) operators it equals the product of the two single local responses
    (the FDAM supplementary, eq. 25).
    """
    comp = second @ first
    return local_response(comp[None, None, query : query + 1], grid, 0, queries="all")[0, 0, 0]


def _single_response(rows: torch.Tensor, grid: tuple[int, int], p: int) -> torch.Tensor:
    """Head-mean local response (h, w) of kernel rows (heads, N)."""
    return local_response(rows[None, :, None, :], grid, p, queries="all")[0, :, 0].mean(dim=0)


def _profile(m: torch.Tensor, bins: int) -> list[float]:
    return _to_list(radial_profile(m, bins))


def _synthetic_stacks(grid: tuple[int, int] = (16, 16), bins: int = 8) -> dict[str, Any]:
    """Band-pass and band-stop two-layer stacks of AttInv operators on periodic Gaussian attention."""
    wide = circulant(gaussian_stencil(grid, 3.0))  # narrow pass band: low cutoff
    narrow = circulant(gaussian_stencil(grid, 0.8))  # wide pass band: high cutoff
    high_shelf = lambda a: layer_kernel(a, 0.2, 1.0)  # noqa: E731  passes above the kernel's cutoff
    low_shelf = lambda a: layer_kernel(a, 1.0, 0.2)  # noqa: E731  passes below it
    cases = {
        "band_pass": (high_shelf(wide), low_shelf(narrow),
                      "layer 1: 0.2 A + (I - A), wide Gaussian A; layer 2: A + 0.2 (I - A), narrow Gaussian A"),
        "band_stop": (low_shelf(wide), high_shelf(narrow),
                      "layer 1: A + 0.2 (I - A), wide Gaussian A; layer 2: 0.2 A + (I - A), narrow Gaussian A"),
    }
    out: dict[str, Any] = {"grid": list(grid), "bins": bins}
    for key, (k1, k2, text) in cases.items():
        r1 = local_response(k1[None, None, :1], grid, 0, queries="all")[0, 0, 0]
        r2 = local_response(k2[None, None, :1], grid, 0, queries="all")[0, 0, 0]
        stack = stack_response(k1, k2, grid, 0)
        out[key] = {"first": _profile(r1, bins), "second": _profile(r2, bins), "stack": _profile(stack, bins),
                    "stack_map": _to_list(stack), "layers": text}
    return out


def attinv_response(model: nn.Module, images: Images, *, layer: Optional[str] = None, image_index: int = 0,
                    bins: int = 8) -> Optional[dict[str, Any]]:
    """Local frequency responses of one AttInv layer for one image of images (B, 3, H, W); None without AttInv.

    The layer is ``layer`` or the one with the largest mean high-pass weight. At the spatial positions of
    the highest and lowest high-pass weight, the head-mean |F| of the attention row A_q, of its inversion
    (I - A)_q and of the learned combination low_h A_q + high_h (I - A)_q (per head h, with the head's
    channel-mean coefficients) are given as centred (h, w) maps and radial profiles (``bins`` rings).
    "stack": the next AttInv layer's combination at the same position and the product of the two
    responses (eq. 25 of the FDAM supplementary: a stack of shift-invariant filters multiplies their
    responses). "synthetic": band-pass and band-stop stacks of periodic Gaussian attention.
    """
    _check_images(images)
    if not 0 <= int(image_index) < images.shape[0]:
        raise FreqkitError(f"attinv_response: image_index {image_index} is outside the batch of {images.shape[0]} images")
    return _attinv_response(model, images[int(image_index) : int(image_index) + 1], layer, bins, None)


def _attinv_response(model: nn.Module, one: torch.Tensor, layer: Optional[str], bins: int,
                     high_means: Optional[dict[str, float]]) -> Optional[dict[str, Any]]:
    """attinv_response on one image (1, 3, H, W); ``high_means`` (layer -> mean high-pass weight on it) saves a forward."""
    names = [n for n, _ in _modules_of(model, "attinv")]
    if not names:
        return None
    if layer is None:
        if high_means is None:
            store = _capture(model, one, attinv=True)["attinv"]
            high_means = {n: float(r["high"].mean()) for n, r in store.items()}
        if not high_means:
            return None
        layer = max(high_means, key=high_means.get)
    if layer not in names:
        raise FreqkitError(f"attinv_response: {layer!r} is not an AttInv layer of the model; choose one of {names}")
    i = names.index(layer)
    partner = names[i + 1] if i + 1 < len(names) else (names[i - 1] if i > 0 else None)
    wanted = {layer} | ({partner} if partner else set())
    cap = _capture(model, one, attinv=True, attinv_keep=lambda n: n in wanted, attention_for=tuple(wanted))
    store, grid, p = cap["attinv"], cap["grid"], cap["prefix"]
    h, w = grid
    n_tok = p + h * w

    def kernels(name: str, q: int) -> dict[str, torch.Tensor]:
        rec = store[name]
        a = rec["attention"][0][:, p + q]  # (heads, N): row of query token p + q
        e = torch.zeros(n_tok)
        e[p + q] = 1.0
        inv = e - a
        low, high = rec["low"][0, p + q], rec["high"][0, p + q]  # (heads,)
        comb = low[:, None] * a + high[:, None] * inv
        return {"attention": _single_response(a, grid, p), "inversion": _single_response(inv, grid, p),
                "combination": _single_response(comb, grid, p), "low": float(low.mean()), "high": float(high.mean())}

    weight = store[layer]["high"][0, p:].mean(dim=-1)  # (h*w,)
    positions = {"high": int(weight.argmax()), "low": int(weight.argmin())}
    out: dict[str, Any] = {"layer": layer, "partner": partner, "grid": [h, w], "num_prefix_tokens": p, "bins": bins,
                           "high_weight_map": _to_list(weight.reshape(h, w)), "positions": {}}
    for key, q in positions.items():
        ks = kernels(layer, q)
        entry = {"token": q, "row": q // w, "col": q % w, "low": ks["low"], "high": ks["high"]}
        for part in ("attention", "inversion", "combination"):
            entry[part] = _to_list(ks[part])
            entry[part + "_profile"] = _profile(ks[part], bins)
        if partner is not None:
            kp = kernels(partner, q)
            prod = ks["combination"] * kp["combination"]
            entry["stack"] = {"partner_combination": _to_list(kp["combination"]),
                              "partner_profile": _profile(kp["combination"], bins),
                              "product": _to_list(prod), "product_profile": _profile(prod, bins)}
        out["positions"][key] = entry
    out["synthetic"] = _synthetic_stacks(bins=bins)
    out["definition"] = ("|F| of kernel rows over spatial keys, mean over heads; combination = low_h A + high_h (I - A) "
                         "with the head's channel-mean coefficients; stack = product of single responses (eq. 25)")
    return out


# =============================================================================== all of them


def method_figures_data(models: Models, images: Images, *, display: Optional[Images] = None, num_images: int = 4) -> dict[str, Any]:
    """The method-figure data that applies to ``models`` (one or a dict name -> model) on images (B, 3, H, W).

    Returns {"applies": [figure kinds present], kind: {model name: data}} for the per-model kinds
    ("attinv_modulation", "freqscale_gain", "spam_filters", "attinv_response") and "features": the data
    of :func:`features` across models. Kinds whose modules a model lacks are left out silently. Per
    model this costs one hooked forward over all images, one over ``num_images`` (features) and, with
    AttInv, one over a single image (attention of two layers).
    """
    _check_images(images)
    named = _named(models)
    found: dict[str, dict[str, Any]] = {k: {} for k in METHOD_FIGURES}
    for name, model in named:
        cap = _capture(model, images, attinv=True, freqscale=True, spam=True)
        mod = _attinv_result(cap["attinv"], cap["grid"], cap["prefix"], images, display, num_images)
        if mod is not None:
            found["attinv_modulation"][name] = mod
            # the response layer is picked on the first image, as attinv_response does on its own
            means = {n: float(r["high"][:1].mean()) for n, r in cap["attinv"].items()}
            resp = _attinv_response(model, images[:1], None, 8, means)
            if resp is not None:
                found["attinv_response"][name] = resp
        fs = _freqscale_result(model, _freqscale_full(cap["freqscale"]))
        if fs is not None:
            found["freqscale_gain"][name] = fs
        sp = _spam_result(model, cap["spam"])
        if sp is not None:
            found["spam_filters"][name] = sp
    feats = features(dict(named), images, display=display, num_images=num_images)
    if feats is not None:
        found["features"] = feats
    out: dict[str, Any] = {"applies": [k for k in METHOD_FIGURES if found[k]]}
    out.update({k: found[k] for k in out["applies"]})
    return out
