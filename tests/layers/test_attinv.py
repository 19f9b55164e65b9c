"""AttInv against the seed's explicit-matrix formula (eq. 32), at init, with prefix tokens, masks,
half precision, and the released parameter names and counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from freqkit.errors import FreqkitError
from freqkit.layers import Attention, AttInv
from freqkit.models.fdam_vit import remap_released_keys

B, N, C, HEADS = 2, 10, 12, 3
D = C // HEADS


def _model(fused: bool = True, init_value: float = 1e-5, randomize: bool = True) -> Attention:
    attn = Attention(C, HEADS, qkv_bias=True, filter=AttInv(C, HEADS, init_value=init_value), fused=fused).eval()
    if randomize:  # order-one gammas and StarReLU scalars so that a wrong formula shows
        f = attn.filter
        with torch.no_grad():
            f.lf_gamma.normal_(0, 0.5)
            f.hf_gamma.normal_(0, 0.5)
            f.dy_freq_starrelu.scale.fill_(1.3)
            f.dy_freq_starrelu.bias.fill_(-0.2)
    return attn


def _explicit_reference(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Seed eq. 32 with explicit matrices: per channel c of head h, Atilde = diag(S_bar) A_h + diag(S_hat) (E - A_h)."""
    f = attn.filter
    qkv = x @ attn.qkv.weight.t() + attn.qkv.bias
    q, k, v = qkv.split(C, dim=-1)
    u = f.dy_freq_starrelu.scale * F.relu(x) ** 2 + f.dy_freq_starrelu.bias
    s_l = torch.tanh(u @ f.dy_freq_2.weight.t() + f.dy_freq_2.bias)  # (B, N, heads)
    t = F.softplus(u @ f.dy_freq.weight.t() + f.dy_freq.bias)
    s_h = 2 * t**2 / (t**2 + 0.3678)
    eye = torch.eye(N)
    y = torch.empty(B, N, C)
    for b in range(B):
        for h in range(HEADS):
            cols = slice(h * D, (h + 1) * D)
            a = torch.softmax(q[b, :, cols] @ k[b, :, cols].t() / math.sqrt(D), dim=-1)
            for j in range(h * D, (h + 1) * D):
                s_bar = 1 + f.lf_gamma[j] * s_l[b, :, h]
                s_hat = f.hf_gamma[j] * s_h[b, :, h]
                a_tilde = torch.diag(s_bar) @ a + torch.diag(s_hat) @ (eye - a)
                y[b, :, j] = a_tilde @ v[b, :, j]
    return y @ attn.proj.weight.t() + attn.proj.bias


@pytest.mark.parametrize("fused", [True, False])
def test_matches_explicit_matrix_formula(fused):
    attn = _model(fused)
    x = torch.randn(B, N, C)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _explicit_reference(attn, x), atol=2e-5, rtol=1e-4)


def test_gate_ranges_and_released_constant():
    f = AttInv(C, HEADS)
    with torch.no_grad():
        f.dy_freq.weight.zero_()
        f.dy_freq_2.weight.zero_()
        f.dy_freq.bias.fill_(math.log(math.e - 1))  # softplus -> exactly 1
        f.dy_freq_2.bias.fill_(0.5)
    sl, sh = f.gates(torch.randn(B, N, C))
    torch.testing.assert_close(sh, torch.full_like(sh, 2 / 1.3678))  # 0.3678, not exp(-1)
    torch.testing.assert_close(sl, torch.full_like(sl, math.tanh(0.5)))
    sl, sh = AttInv(C, HEADS).gates(10 * torch.randn(4, 50, C))
    assert sl.abs().max() <= 1 and sh.min() >= 0 and sh.max() <= 2  # (float saturation reaches the bounds)


def test_identity_at_init():
    x = torch.randn(B, N, C)
    plain = Attention(C, HEADS, qkv_bias=True).eval()
    exact = _model(init_value=0.0, randomize=False)
    exact.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.equal(exact(x), plain(x))
        # released init 1e-5: |Y - O| <= 1e-5 |O| + 2e-5 |V - O| per entry, before the projection
        default = _model(randomize=False)
        default.load_state_dict(plain.state_dict(), strict=False)
        q, k, v = default.qkv_heads(x)
        o = F.scaled_dot_product_attention(q, k, v)
        ctx = type("Ctx", (), {"x": x, "v": v})()
        y = default.filter(o, ctx)
        assert ((y - o).abs() <= 1e-5 * o.abs() + 2e-5 * (v - o).abs() + 1e-7).all()
        assert not torch.equal(y, o)


def test_prefix_tokens_take_part():
    attn = _model()
    x = torch.randn(B, N, C)
    x2 = x.clone()
    x2[:, 0] += 1.0  # change only the "CLS" token
    with torch.no_grad():
        y, y2 = attn(x), attn(x2)
    assert (y[:, 1:] - y2[:, 1:]).abs().max() > 1e-4  # spatial tokens attend to it
    torch.testing.assert_close(attn(x)[:, 0], _explicit_reference(attn, x)[:, 0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("fused", [True, False])
def test_masked_attention(fused):
    attn = _model(fused)
    ref = _model(not fused)
    ref.load_state_dict(attn.state_dict())
    keep = torch.rand(B, 1, N, N) > 0.4
    keep[..., 0] = True
    x = torch.randn(B, N, C)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, attn_mask=keep), ref(x, attn_mask=keep), atol=1e-5, rtol=1e-5)


def test_parameter_count_deit_small_and_released_keys():
    f = AttInv(384, 6)
    assert sum(p.numel() for p in f.parameters()) == 2 * (384 * 6 + 6) + 2 * 384 + 2 == 5390
    attn = Attention(192, 3, qkv_bias=True, filter=AttInv(192, 3))
    keys = set(attn.state_dict())
    released = {
        "qkv.weight",
        "qkv.bias",
        "proj.weight",
        "proj.bias",
        "dy_freq.weight",
        "dy_freq.bias",
        "dy_freq_2.weight",
        "dy_freq_2.bias",
        "lf_gamma",
        "hf_gamma",
        "dy_freq_starrelu.scale",
        "dy_freq_starrelu.bias",
    }
    sd = {k: torch.randn_like(attn.state_dict()[("filter." + k) if ("filter." + k) in keys else k]) for k in released}
    mapped = remap_released_keys(sd)
    assert set(mapped) == keys
    attn.load_state_dict(mapped, strict=True)
    assert torch.equal(attn.filter.dy_freq_2.weight, sd["dy_freq_2.weight"])
    assert torch.equal(remap_released_keys(mapped)["filter.lf_gamma"], sd["lf_gamma"])  # idempotent


def test_bfloat16_autocast_and_weights():
    attn = _model()
    x = torch.randn(B, N, C)
    with torch.no_grad():
        ref = attn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = attn(x)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.05)
        y16 = attn.to(torch.bfloat16)(x.bfloat16())
        assert y16.dtype == torch.bfloat16
        torch.testing.assert_close(y16.float(), ref, atol=0.05, rtol=0.05)


def test_inference_path_equals_autograd_path():
    attn = _model()
    x = torch.randn(B, N, C)
    with torch.no_grad():  # in-place path, heads written in (B, N, heads, d) memory
        fast = attn(x)
    torch.testing.assert_close(fast, attn(x).detach(), atol=1e-6, rtol=1e-6)


def test_gradients_reach_gates_and_gammas():
    attn = _model().train()
    attn(torch.randn(B, N, C)).square().sum().backward()
    f = attn.filter
    for p in (f.dy_freq.weight, f.dy_freq_2.weight, f.lf_gamma, f.hf_gamma, f.dy_freq_starrelu.scale):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(FreqkitError, match="not divisible"):
        AttInv(10, 4)
    with pytest.raises(FreqkitError, match="built for 3 heads"):
        Attention(12, 4, filter=AttInv(12, 3))(torch.randn(1, 5, 12))


def test_inference_path_with_a_forward_hook_equals_the_plain_one():
    # the inference path reuses A V's memory; with a hook on the filter it leaves A V alone
    attn = _model()
    x = torch.randn(B, N, C)
    seen = []
    with torch.no_grad():
        plain = attn(x)
        handle = attn.filter.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
        hooked = attn(x)
        handle.remove()
        q, k, v = attn.qkv_heads(x)
        av = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(hooked, plain)
    torch.testing.assert_close(seen[0], av)
