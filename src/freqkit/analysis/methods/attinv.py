"""AttInv (FDAM) figures: the per-position high-pass weight (supplementary Fig. 7) and the local frequency responses
of A, I - A and the learned combination, alone and stacked (Figs. 2-3, eq. 25).

Tap: a forward pre-hook (with kwargs) on each AttInv layer reads the attention context it is called with,
``filter(out, ctx)``: the attention input ``ctx.x`` gives the gates (``AttInv.gates``), and ``ctx.attend``
applied to the identity gives the attention map the layer uses. The hook only reads.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from freqkit.analysis.methods._common import Images, check_images, display_images, hooked_forward, modules_of, to_list, token_grid
from freqkit.errors import FreqkitError
from freqkit.spectral import circulant, layer_kernel, local_response, periodic_gaussian, radial_profile, stack_response

__all__ = ["attinv_modulation", "attinv_response", "capture", "grid_of", "modulation_result", "response_for", "taps"]


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


def taps(model: nn.Module, store: dict, keep: Callable[[str], bool], want_attention: Callable[[str], bool]) -> list:
    """Pre-hooks on AttInv layers filling store[name] with high / low (B, N, heads) and, if wanted, A (B, heads, N, N)."""
    handles = []
    for name, layer in modules_of(model, "attinv"):
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


def modulation_result(
    store: dict, grid: tuple[int, int], p: int, images: torch.Tensor, display: Optional[torch.Tensor], num_images: int
) -> Optional[dict[str, Any]]:
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
        "high": [to_list(m[:k]) for m in highs],
        "low": [to_list(m[:k]) for m in lows],
        "high_mean": [float(m.mean()) for m in highs],
        "high_std": [float(m.std(unbiased=False)) for m in highs],
        "images": display_images(images, display, k),
        "definition": "high = mean over channels c of g_hf[c] * Sh[token, head(c)]; low = mean over channels of 1 + g_lf[c] * Sl[token, head(c)]",
    }


def attinv_modulation(
    model: nn.Module, images: Images, *, display: Optional[Images] = None, num_images: int = 4
) -> Optional[dict[str, Any]]:
    """AttInv's per-position weights for images (B, 3, H, W): per layer "high" and "low" (n, h, w) maps; None without AttInv.

    "high" is the high-pass weight the layer applies at each spatial token: the mean over all channels
    of g_hf[c] * Sh[token, head(c)] (equivalently, over heads of Sh times the head's mean g_hf), the
    coefficient of (I - A) V. "low" is the mean over channels of 1 + g_lf[c] Sl[token, head(c)], the
    coefficient of A V. Maps are on the token grid (prefix tokens dropped) for the first ``num_images``
    images; "high_mean" / "high_std" per layer summarize all B images. ``display`` (B, 3, H, W) in
    [0, 1] are the images to overlay (default: the inputs, min-max scaled).
    """
    check_images(images)
    store = capture(model, images)
    return modulation_result(store, *grid_of(model, store, images), images, display, num_images)


def _single_response(rows: torch.Tensor, grid: tuple[int, int], p: int) -> torch.Tensor:
    """Head-mean local response (h, w) of kernel rows (heads, N)."""
    return local_response(rows[None, :, None, :], grid, p, queries="all")[0, :, 0].mean(dim=0)


def _profile(m: torch.Tensor, bins: int) -> list[float]:
    return to_list(radial_profile(m, bins))


def _synthetic_stacks(grid: tuple[int, int] = (16, 16), bins: int = 8) -> dict[str, Any]:
    """Band-pass and band-stop two-layer stacks of AttInv operators on periodic Gaussian attention."""
    wide = circulant(periodic_gaussian(grid, 3.0))  # narrow pass band: low cutoff
    narrow = circulant(periodic_gaussian(grid, 0.8))  # wide pass band: high cutoff
    high_shelf = lambda a: layer_kernel(a, 0.2, 1.0)  # noqa: E731  passes above the kernel's cutoff
    low_shelf = lambda a: layer_kernel(a, 1.0, 0.2)  # noqa: E731  passes below it
    cases = {
        "band_pass": (
            high_shelf(wide),
            low_shelf(narrow),
            "layer 1: 0.2 A + (I - A), wide Gaussian A; layer 2: A + 0.2 (I - A), narrow Gaussian A",
        ),
        "band_stop": (
            low_shelf(wide),
            high_shelf(narrow),
            "layer 1: A + 0.2 (I - A), wide Gaussian A; layer 2: 0.2 A + (I - A), narrow Gaussian A",
        ),
    }
    out: dict[str, Any] = {"grid": list(grid), "bins": bins}
    for key, (k1, k2, text) in cases.items():
        r1 = local_response(k1[None, None, :1], grid, 0, queries="all")[0, 0, 0]
        r2 = local_response(k2[None, None, :1], grid, 0, queries="all")[0, 0, 0]
        stack = stack_response(k1, k2, grid, 0)
        out[key] = {
            "first": _profile(r1, bins),
            "second": _profile(r2, bins),
            "stack": _profile(stack, bins),
            "stack_map": to_list(stack),
            "layers": text,
        }
    return out


def attinv_response(
    model: nn.Module, images: Images, *, layer: Optional[str] = None, image_index: int = 0, bins: int = 8
) -> Optional[dict[str, Any]]:
    """Local frequency responses of one AttInv layer for one image of images (B, 3, H, W); None without AttInv.

    The layer is ``layer`` or the one with the largest mean high-pass weight. At the spatial positions of
    the highest and lowest high-pass weight, the head-mean |F| of the attention row A_q, of its inversion
    (I - A)_q and of the learned combination low_h A_q + high_h (I - A)_q (per head h, with the head's
    channel-mean coefficients) are given as centred (h, w) maps and radial profiles (``bins`` rings).
    "stack": the next AttInv layer's combination at the same position and the product of the two
    responses (eq. 25 of the FDAM supplementary: a stack of shift-invariant filters multiplies their
    responses). "synthetic": band-pass and band-stop stacks of periodic Gaussian attention.
    """
    check_images(images)
    if not 0 <= int(image_index) < images.shape[0]:
        raise FreqkitError(f"attinv_response: image_index {image_index} is outside the batch of {images.shape[0]} images")
    return response_for(model, images[int(image_index) : int(image_index) + 1], layer, bins, None)


def response_for(
    model: nn.Module, one: torch.Tensor, layer: Optional[str], bins: int, high_means: Optional[dict[str, float]]
) -> Optional[dict[str, Any]]:
    """attinv_response on one image (1, 3, H, W); ``high_means`` (layer -> mean high-pass weight on it) saves a forward."""
    names = [n for n, _ in modules_of(model, "attinv")]
    if not names:
        return None
    if layer is None:
        if high_means is None:
            store = capture(model, one)
            high_means = {n: float(r["high"].mean()) for n, r in store.items()}
        if not high_means:
            return None
        layer = max(high_means, key=high_means.get)
    if layer not in names:
        raise FreqkitError(f"attinv_response: {layer!r} is not an AttInv layer of the model; choose one of {names}")
    i = names.index(layer)
    partner = names[i + 1] if i + 1 < len(names) else (names[i - 1] if i > 0 else None)
    wanted = {layer} | ({partner} if partner else set())
    store = capture(model, one, keep=lambda n: n in wanted, attention_for=tuple(wanted))
    grid, p = grid_of(model, store, one)
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
        return {
            "attention": _single_response(a, grid, p),
            "inversion": _single_response(inv, grid, p),
            "combination": _single_response(comb, grid, p),
            "low": float(low.mean()),
            "high": float(high.mean()),
        }

    weight = store[layer]["high"][0, p:].mean(dim=-1)  # (h*w,)
    positions = {"high": int(weight.argmax()), "low": int(weight.argmin())}
    out: dict[str, Any] = {
        "layer": layer,
        "partner": partner,
        "grid": [h, w],
        "num_prefix_tokens": p,
        "bins": bins,
        "high_weight_map": to_list(weight.reshape(h, w)),
        "positions": {},
    }
    for key, q in positions.items():
        ks = kernels(layer, q)
        entry = {"token": q, "row": q // w, "col": q % w, "low": ks["low"], "high": ks["high"]}
        for part in ("attention", "inversion", "combination"):
            entry[part] = to_list(ks[part])
            entry[part + "_profile"] = _profile(ks[part], bins)
        if partner is not None:
            kp = kernels(partner, q)
            prod = ks["combination"] * kp["combination"]
            entry["stack"] = {
                "partner_combination": to_list(kp["combination"]),
                "partner_profile": _profile(kp["combination"], bins),
                "product": to_list(prod),
                "product_profile": _profile(prod, bins),
            }
        out["positions"][key] = entry
    out["synthetic"] = _synthetic_stacks(bins=bins)
    out["definition"] = (
        "|F| of kernel rows over spatial keys, mean over heads; combination = low_h A + high_h (I - A) "
        "with the head's channel-mean coefficients; stack = product of single responses (eq. 25)"
    )
    return out


def capture(
    model: nn.Module, images: torch.Tensor, keep: Callable[[str], bool] = lambda n: True, attention_for: Sequence[str] = ()
) -> dict[str, dict[str, torch.Tensor]]:
    """One read-only forward recording, per kept AttInv layer, "high" / "low" (B, N, heads) and "attention" for ``attention_for``."""
    store: dict[str, dict[str, torch.Tensor]] = {}
    hooked_forward(model, images, taps(model, store, keep, lambda n: n in attention_for))
    return store


def grid_of(model: nn.Module, store: Mapping[str, Any], images: torch.Tensor) -> tuple[tuple[int, int], int]:
    """((h, w), prefix count) of the token sequences in ``store`` (((0, 0), 0) when it is empty)."""
    if not store:
        return (0, 0), 0
    n = next(iter(store.values()))["high"].shape[1]
    return token_grid(model, int(n), (int(images.shape[-2]), int(images.shape[-1])))
