"""freqkit.flops against closed-form MAC counts of single layers and of whole converted models."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import freqkit
from freqkit.analysis.flops import KINDS, fft_macs
from freqkit.errors import FreqkitError
from freqkit.layers import GFSA, Attention, AttnScale, FeatScale

B, N, C, H = 2, 17, 48, 4
D = C // H


class _Fn(nn.Module):
    """Wraps a function so that flops() can run it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _sdpa_pass(b=B, h=H, n=N, d=D) -> int:
    return 2 * b * h * n * n * d


def test_linear_2d_and_3d_count_in_features_times_out_features_per_row():
    lin = nn.Linear(24, 10)
    assert freqkit.flops(lin, (5, 24)).total == 5 * 24 * 10
    r = freqkit.flops(lin, (3, 7, 24))
    assert r.total == r.by_kind["matmul"] == 3 * 7 * 24 * 10


def test_one_sdpa_pass_and_unequal_value_width():
    q = torch.randn(B, H, N, D)
    r = freqkit.flops(_Fn(lambda t: F.scaled_dot_product_attention(t, t, t)), q)
    assert r.by_kind == {"matmul": 0, "attention": _sdpa_pass(), "fft": 0, "pointwise": 0}
    k = torch.randn(B, H, 9, D)
    r = freqkit.flops(_Fn(lambda t: F.scaled_dot_product_attention(t, k, k)), q)
    assert r.by_kind["attention"] == B * H * N * 9 * 2 * D
    # a value width unlike the key width sends CPU SDPA to its math fallback: the same products,
    # counted as matmul (QK^T, A V), plus the softmax as pointwise
    v = torch.randn(B, H, 9, 5)
    r = freqkit.flops(_Fn(lambda t: F.scaled_dot_product_attention(t, k, v)), q)
    assert r.by_kind["attention"] + r.by_kind["matmul"] == B * H * N * 9 * (D + 5)


def test_plain_attention_is_projections_plus_one_pass():
    r = freqkit.flops(Attention(C, H, qkv_bias=True), (B, N, C))
    assert r.by_kind["matmul"] == B * N * C * 3 * C + B * N * C * C
    assert r.by_kind["attention"] == _sdpa_pass()
    assert r.by_module["qkv"] == B * N * C * 3 * C and r.by_module["proj"] == B * N * C * C


def test_gfsa_costs_exactly_one_more_pass_in_its_filter():
    plain = freqkit.flops(Attention(C, H), (B, N, C))
    r = freqkit.flops(Attention(C, H, filter=GFSA(H, K=3)), (B, N, C))
    assert r.by_kind["attention"] == 2 * _sdpa_pass()
    assert r.by_kind["matmul"] == plain.by_kind["matmul"]
    assert r.by_module_kind["filter"]["attention"] == _sdpa_pass()
    # folding: out * c1 and one addcmul over (B, h, N, d); c1 = 1 + (2 - K) wK and c2 = (K - 1) wK per head
    assert r.by_module_kind["filter"]["pointwise"] == 2 * B * H * N * D + 3 * H


def test_attnscale_mean_is_one_reduction_and_one_fused_pass():
    r = freqkit.flops(Attention(C, H, filter=AttnScale(H)), (B, N, C))
    filt = r.by_module_kind["filter"]
    assert filt.get("attention", 0) == 0 and filt.get("matmul", 0) == 0
    mean = B * H * N * D  # one add per value element
    combine = B * H * N * D  # the addcmul (1 + w) A V - w U V
    small = 2 * B * H * D + H  # w * U V and its negation on (B, h, 1, d); 1 + w per head
    assert filt["pointwise"] == mean + combine + small


def test_attnscale_under_a_mask_pays_one_uniform_pass():
    mask = torch.ones(B, 1, 1, N, dtype=torch.bool)
    mask[0, ..., 5:] = False
    attn = Attention(C, H, filter=AttnScale(H))
    r = freqkit.flops(attn, (B, N, C), attn_mask=mask)
    assert r.by_module_kind["filter"]["attention"] == _sdpa_pass()


def test_featscale_is_a_mean_and_one_fused_pass():
    r = freqkit.flops(FeatScale(C), (B, N, C))
    assert r.by_kind["matmul"] == 0 and r.by_kind["attention"] == 0
    # mean over tokens + addcmul over (B, N, C); (s_d - s_h) * mean on (B, 1, C); s_d, s_h, 1 + s_h, s_d - s_h per channel
    assert r.by_kind["pointwise"] == 2 * B * N * C + B * C + 4 * C


def test_fft_closed_forms_power_of_two():
    x = torch.randn(3, 5, 8, 8)
    per_map_r2c = 8 * 2 * 8 * 3 + 5 * 2 * 8 * 3  # 8 rows of length 8, then 5 half-spectrum columns of length 8
    assert freqkit.flops(_Fn(torch.fft.rfft2), x).by_kind["fft"] == 15 * per_map_r2c
    spec = torch.fft.rfft2(x)
    irfft = freqkit.flops(_Fn(lambda t: torch.fft.irfft2(t, s=(8, 8))), spec)
    assert irfft.by_kind["fft"] == 15 * per_map_r2c
    assert freqkit.flops(_Fn(torch.fft.fft2), x).by_kind["fft"] == 15 * (2 * 8 * 2 * 8 * 3)
    # one 1-D transform of length 16: (16 / 2) log2 16 = 32 complex MACs = 128 real
    assert freqkit.flops(_Fn(torch.fft.fft), torch.randn(16)).by_kind["fft"] == 128


def test_fft_closed_form_odd_non_square():
    x = torch.randn(1, 2, 7, 12)
    want = 2 * (7 * 2 * 12 * math.log2(12) + 7 * 2 * 7 * math.log2(7))
    assert freqkit.flops(_Fn(lambda t: torch.fft.rfft2(t, norm="ortho")), x).by_kind["fft"] == round(want)
    assert fft_macs([12, 7], [7, 7]) == pytest.approx(want / 2)


def test_complex_pointwise_products_count_four():
    z = torch.randn(4, 6, dtype=torch.complex64)
    assert freqkit.flops(_Fn(lambda t: t * z), z).by_kind["pointwise"] == 4 * 24
    assert freqkit.flops(_Fn(lambda t: t + z), z).by_kind["pointwise"] == 2 * 24


def test_freqscale_counts_its_two_ffts():
    from freqkit.layers.freqscale import FreqScale

    c, h, w = 32, 14, 14
    r = freqkit.flops(FreqScale(c, transform="fft"), (1, c, h, w))
    per_map = h * 2 * w * math.log2(w) + (w // 2 + 1) * 2 * h * math.log2(h)  # rfft2; irfft2 is the mirror
    assert r.by_kind["fft"] == pytest.approx(2 * c * per_map, abs=4)
    # the spectrum times the real filter: at least 2 real MACs per complex coefficient
    assert r.by_kind["pointwise"] >= 2 * c * h * (w // 2 + 1)


def test_whole_model_breakdown_and_gfsa_overhead():
    base = timm.create_model("deit_small_patch16_224", depth=2, img_size=64)
    rb = freqkit.flops(base, (1, 3, 64, 64))
    n = (64 // 16) ** 2 + 1
    assert rb.by_kind["attention"] == 2 * _sdpa_pass(b=1, h=6, n=n, d=64)
    assert rb.total == sum(rb.by_kind.values())
    assert rb.by_module["blocks"] + rb.by_module["patch_embed"] + rb.by_module["head"] <= rb.total
    rg = freqkit.flops(freqkit.convert(timm.create_model("deit_small_patch16_224", depth=2, img_size=64), "gfsa"), (1, 3, 64, 64))
    assert rg.by_kind["matmul"] == rb.by_kind["matmul"]
    assert rg.by_kind["attention"] == 2 * rb.by_kind["attention"]
    table = rg.table(depth=4)
    assert "blocks.1.attn.filter" in table and all(k in table for k in KINDS)
    assert "blocks.1.attn.filter" not in rg.table(depth=2)


def test_bad_input_is_a_clear_error():
    with pytest.raises(FreqkitError, match="input_size"):
        freqkit.flops(nn.Linear(3, 3), (0, 3))
