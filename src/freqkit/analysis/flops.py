"""Multiply-accumulate (MAC) counts of one forward pass, with every filter's extra work counted.

Built on ``torch.utils.flop_counter.FlopCounterMode`` (which attributes each aten op to the modules
on the stack) with formulas for the ops it does not count: the CPU fused-attention kernel, FFTs
and pointwise work. Conventions (one multiply plus one add = 1 MAC):

- ``matmul``: mm, addmm, bmm, baddbmm, convolution: M N K per product, as FlopCounterMode counts
  them (halved: it counts 2 FLOPs per MAC); bias adds are folded in.
- ``attention``: every fused scaled-dot-product pass, any backend: B heads Nq Nk (d_qk + d_v),
  i.e. 2 B h N^2 d for self-attention (QK^T and A V). Masks and causality do not reduce it.
  GFSA's second pass, and AttnScale's U V under a mask (a pass with zero queries), count in full.
  When PyTorch falls back to its math SDPA (e.g. a value width unlike the key width on CPU), the
  same products are seen as ``matmul`` and the softmax as ``pointwise``.
- ``fft``: a 1-D transform of length n costs (n / 2) log2(n) complex MACs, 1 complex MAC = 4 real
  MACs, whether real-to-complex, complex-to-real or complex; a multi-dimensional transform is the
  sum of its 1-D passes, and the passes over the other axes of an rfft / irfft only run on the
  n // 2 + 1 non-redundant columns.
- ``pointwise``: each elementwise, reduction, normalization, softmax, activation, pooling or
  resampling op costs 1 MAC per element of its largest operand (input or output); complex
  elements count 2, a product or quotient of two complex tensors 4. Data movement (views,
  copies, concatenation, indexing, dtype casts) is free. This makes AttnScale's mean, FeatScale's
  and GFSA's combinations, FreqScale's complex multiply and AttInv's gates visible.

Module rows are inclusive and exist for modules entered through ``module(...)``; work done through
another method (``FreqBlock`` calls ``FreqScale.apply_tokens``) counts in the caller's row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from freqkit.errors import FreqkitError

__all__ = ["flops", "count_macs", "FlopReport", "fft_macs", "KINDS"]

aten = torch.ops.aten

KINDS = ("matmul", "attention", "fft", "pointwise")

_MATMUL = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "_scaled_mm",
    "convolution",
    "_convolution",
    "cudnn_convolution",
    "convolution_overrideable",
    "_slow_conv2d_forward",
)
_ATTENTION_BUILTIN = (
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention",
    "_flash_attention_forward",
    "_efficient_attention_forward",
)
_FFT = ("_fft_r2c", "_fft_c2r", "_fft_c2c")
_POINTWISE = (
    # arithmetic and elementwise math
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "addcmul",
    "addcdiv",
    "neg",
    "reciprocal",
    "abs",
    "sign",
    "square",
    "pow",
    "exp",
    "exp2",
    "expm1",
    "log",
    "log1p",
    "log2",
    "sqrt",
    "rsqrt",
    "sin",
    "cos",
    "atan2",
    "erf",
    "lerp",
    "clamp",
    "clamp_min",
    "clamp_max",
    "maximum",
    "minimum",
    "where",
    "masked_fill",
    "threshold",
    # activations
    "relu",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "tanh",
    "softplus",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "leaky_relu",
    "elu",
    # reductions
    "mean",
    "sum",
    "prod",
    "amax",
    "amin",
    "max",
    "min",
    "var",
    "var_mean",
    "std",
    "std_mean",
    "linalg_vector_norm",
    "norm",
    "logsumexp",
    "cumsum",
    # normalization and softmax
    "native_layer_norm",
    "native_group_norm",
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "_softmax",
    "_log_softmax",
    # pooling and resampling
    "avg_pool2d",
    "max_pool2d_with_indices",
    "_adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "upsample_nearest2d",
    "upsample_bilinear2d",
    "upsample_bicubic2d",
    "_upsample_bilinear2d_aa",
    "_upsample_bicubic2d_aa",
)
_COMPLEX_PRODUCTS = ("mul", "div", "addcmul", "addcdiv")


def _packets(names: Sequence[str]) -> list[Any]:
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def _tensors(*objs: Any) -> list[torch.Tensor]:
    flat, _ = tree_flatten(objs)
    return [t for t in flat if isinstance(t, torch.Tensor)]


def _raw(f: Callable[..., int]) -> Callable[..., int]:
    f._get_raw = True  # FlopCounterMode passes tensors, not shapes, to such formulas
    return f


def _halved(formula: Callable[..., int]) -> Callable[..., int]:
    """A FlopCounterMode formula (FLOPs = 2 MACs) turned into a MAC formula."""
    return _raw(lambda *args, **kwargs: int(formula(*args, **kwargs)) // 2)


def _pointwise(complex_products: bool) -> Callable[..., int]:
    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        inputs = _tensors(args, kwargs)
        tensors = inputs + _tensors(out_val)
        if not tensors:
            return 0
        n = max(t.numel() for t in tensors)
        if any(t.is_complex() for t in tensors):
            both = sum(t.is_complex() and t.numel() > 1 for t in inputs) >= 2
            n *= 4 if (complex_products and both) else 2
        return n

    return _raw(formula)


@_raw
def _sdpa_macs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, out_val: Any = None, **kwargs: Any
) -> int:
    """B h Nq Nk (d_qk + d_v): the QK^T and A V products of one fused pass."""
    *batch, nq, d = query.shape
    nk, dv = key.shape[-2], value.shape[-1]
    return math.prod(batch) * nq * nk * (d + dv)


def fft_macs(lengths: Sequence[int], transforms: Sequence[int]) -> float:
    """Real MACs of 1-D FFT passes: ``transforms[i]`` transforms of length ``lengths[i]`` at (n/2) log2 n complex MACs each."""
    return sum(4 * t * (n / 2) * math.log2(n) for n, t in zip(lengths, transforms) if n > 1)


def _dims(x: torch.Tensor, dim: Sequence[int]) -> list[int]:
    return [d % x.ndim for d in dim]


@_raw
def _fft_r2c_macs(x: torch.Tensor, dim: Sequence[int], normalization: int, onesided: bool, *args: Any, **kwargs: Any) -> int:
    dims = _dims(x, dim)
    shape = list(x.shape)
    last = dims[-1]
    n = shape[last]
    lengths, counts = [n], [x.numel() // n]
    shape[last] = n // 2 + 1 if onesided else n
    numel = math.prod(shape)
    for d in dims[:-1]:
        lengths.append(shape[d])
        counts.append(numel // shape[d])
    return round(fft_macs(lengths, counts))


@_raw
def _fft_c2r_macs(x: torch.Tensor, dim: Sequence[int], normalization: int, last_dim_size: int, *args: Any, **kwargs: Any) -> int:
    dims = _dims(x, dim)
    numel = x.numel()
    lengths = [x.shape[d] for d in dims[:-1]] + [int(last_dim_size)]
    counts = [numel // x.shape[d] for d in dims[:-1]] + [numel // x.shape[dims[-1]]]
    return round(fft_macs(lengths, counts))


@_raw
def _fft_c2c_macs(x: torch.Tensor, dim: Sequence[int], *args: Any, **kwargs: Any) -> int:
    dims = _dims(x, dim)
    return round(fft_macs([x.shape[d] for d in dims], [x.numel() // x.shape[d] for d in dims]))


def _formulas() -> tuple[dict[Any, Callable[..., int]], dict[Any, str]]:
    """(op packet -> MAC formula, op packet -> kind) for every counted op."""
    mapping: dict[Any, Callable[..., int]] = {}
    kind: dict[Any, str] = {}
    for name, packets in (("matmul", _packets(_MATMUL)), ("attention", _packets(_ATTENTION_BUILTIN))):
        for p in packets:
            if p in flop_registry:
                mapping[p], kind[p] = _halved(flop_registry[p]), name
    for p in _packets(("_scaled_dot_product_flash_attention_for_cpu",)):
        mapping[p], kind[p] = _sdpa_macs, "attention"
    for p, f in zip(_packets(_FFT), (_fft_r2c_macs, _fft_c2r_macs, _fft_c2c_macs)):
        mapping[p], kind[p] = f, "fft"
    for name in _POINTWISE:
        # in-place variants (``mul_``) do the same work; inference paths use them to save memory
        for variant in (name, name + "_"):
            if hasattr(aten, variant):
                p = getattr(aten, variant)
                mapping[p], kind[p] = _pointwise(name in _COMPLEX_PRODUCTS), "pointwise"
    return mapping, kind


def _natural(name: str) -> list[Union[int, str]]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _fmt(value: float, scale: float, suffix: str) -> str:
    return f"{value / scale:.3f}{suffix}"


@dataclass
class FlopReport:
    """MACs of one forward: ``total``, ``by_kind`` (matmul, attention, fft, pointwise), ``by_module``
    (inclusive, names relative to the model, e.g. ``blocks.0.attn``) and ``by_module_kind``."""

    total: int
    by_kind: dict[str, int]
    by_module: dict[str, int]
    by_module_kind: dict[str, dict[str, int]] = field(repr=False)
    input_size: tuple[int, ...] = ()

    def table(self, depth: int = 2) -> str:
        """A text table of the modules up to ``depth`` levels deep, one column per kind."""
        scale, suffix = next(((s, x) for s, x in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if self.total >= s), (1.0, ""))
        header = ["module", *KINDS, "total", "share"]
        rows = [["(model)", *(_fmt(self.by_kind[k], scale, suffix) for k in KINDS), _fmt(self.total, scale, suffix), "100.0%"]]
        for name in sorted(self.by_module, key=_natural):
            level = name.count(".") + 1
            if level > depth:
                continue
            kinds = self.by_module_kind[name]
            share = f"{100.0 * self.by_module[name] / self.total:.1f}%" if self.total else "0%"
            rows.append(
                [
                    "  " * level + name,
                    *(_fmt(kinds.get(k, 0), scale, suffix) for k in KINDS),
                    _fmt(self.by_module[name], scale, suffix),
                    share,
                ]
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *rows]
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines) + f"\n(MACs of one forward at input {tuple(self.input_size)})"

    def __str__(self) -> str:
        return self.table()


def count_macs(fn: Callable[[], Any], root: Optional[nn.Module] = None, input_size: tuple[int, ...] = ()) -> FlopReport:
    """Run ``fn()`` under the counter; module names are made relative to ``root`` (its class name is stripped)."""
    mapping, kind = _formulas()
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    counts = counter.get_flop_counts()
    root_name = type(root).__name__ if root is not None else None
    by_kind = {k: 0 for k in KINDS}
    for op, n in counts.get("Global", {}).items():
        by_kind[kind[op]] += int(n)
    by_module: dict[str, int] = {}
    by_module_kind: dict[str, dict[str, int]] = {}
    for name, ops in counts.items():
        if name == "Global" or name == root_name:
            continue
        if root_name is not None and name.startswith(root_name + "."):
            name = name[len(root_name) + 1 :]
        per_kind: dict[str, int] = {}
        for op, n in ops.items():
            per_kind[kind[op]] = per_kind.get(kind[op], 0) + int(n)
        by_module_kind[name] = per_kind
        by_module[name] = sum(per_kind.values())
    return FlopReport(sum(by_kind.values()), by_kind, by_module, by_module_kind, tuple(input_size))


def flops(
    model: nn.Module,
    input_size: Union[Sequence[int], torch.Tensor],
    **forward_kwargs: Any,
) -> FlopReport:
    """MACs of one eval-mode forward of ``model`` on a random input of ``input_size`` (the full shape,
    batch included, e.g. (1, 3, 224, 224) for an image model or (B, N, C) for a token layer), or on
    a given tensor. Returns a :class:`FlopReport` (``.total``, ``.by_kind``, ``.by_module``, ``.table()``)."""
    if not isinstance(model, nn.Module):
        raise FreqkitError(f"flops: expected an nn.Module, got {type(model).__name__}; pass the model itself")
    ref = next(iter(model.parameters()), None)
    if isinstance(input_size, torch.Tensor):
        x = input_size
    else:
        shape = tuple(int(s) for s in input_size)
        if not shape or min(shape) < 1:
            raise FreqkitError(
                f"flops: input_size {tuple(input_size)} must be a full shape of positive sizes, batch included, e.g. (1, 3, 224, 224)"
            )
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        x = torch.randn(shape, dtype=dtype, device=ref.device if ref is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return count_macs(lambda: model(x, **forward_kwargs), root=model, input_size=tuple(x.shape))
    finally:
        model.train(was_training)
