"""SPAM v2 (SPANetV2's ExSPAM): fused vs reference path, layouts, gains, the gain cache, keys, dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from closeness import assert_scaled_close
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers import SPAMv2
from freqkit.layers.spam_v2 import checkpoint_layout


def _randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def _pair(dim=16, size=6, **kw) -> tuple[SPAMv2, SPAMv2]:
    ref = _randomize(SPAMv2(dim, size=size, fused=False, **kw)).eval()
    fused = SPAMv2(dim, size=size, fused=True, **kw).eval()
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _bruteforce(m: SPAMv2, x: torch.Tensor) -> torch.Tensor:
    """The spec written out with loops over scales and channels (float64), for either layout."""
    m = m.double()
    x = x.double()
    b, h, w, c = x.shape
    n, g = m.num_scales, c // m.num_scales
    q = F.gelu(x @ m.query[0].weight.T)
    ctx = (x @ m.ctx.weight.T).permute(0, 3, 1, 2)
    z = torch.zeros(b, c, h, w, dtype=torch.float64)
    for i in range(n):
        conv = getattr(m, f"local_conv_{i + 1}")
        theta = getattr(m, f"filter_{i + 1}")
        if theta.shape[-2:] != (h, w // 2 + 1):
            theta = F.interpolate(theta[None], size=(h, w // 2 + 1), mode="bicubic", align_corners=True)[0]
        gain = torch.sigmoid(m.alpha * theta) if m.gain == "scaled_sigmoid" else torch.sigmoid(theta)
        out = torch.fft.irfft2(torch.fft.rfft2(conv(ctx[:, i * g : (i + 1) * g]), norm="ortho") * gain, s=(h, w), norm="ortho")
        for ch in range(g):
            dst = n * ch + i if m.layout == "interleave" else i * g + ch
            z[:, dst] = out[:, ch]
    s = m.proj(z).permute(0, 2, 3, 1)
    return (q * s) @ m.proj_out.weight.T


@pytest.mark.parametrize("layout", ["interleave", "head_major"])
@pytest.mark.parametrize("gain", ["sigmoid", "scaled_sigmoid"])
@pytest.mark.parametrize("hw", [(6, 6), (5, 9), (8, 3)])
def test_fused_and_reference_equal_the_bruteforce_spec(layout, gain, hw):
    ref, fused = _pair(layout=layout, gain=gain)
    if gain == "scaled_sigmoid":
        with torch.no_grad():
            ref.alpha.fill_(1.7), fused.alpha.fill_(1.7)
    x = torch.randn(2, *hw, 16)
    with torch.no_grad():
        want = _bruteforce(ref, x).float()
        ref.float()
        got_ref, got_fused = ref(x), fused(x)
    assert_scaled_close(got_ref, want, rel=1e-4)
    assert_scaled_close(got_fused, want, rel=1e-4)


def test_layouts_differ_and_alpha_matters():
    a = _randomize(SPAMv2(16, size=6)).eval()
    b = SPAMv2(16, size=6, layout="head_major").eval()
    b.load_state_dict(a.state_dict())
    c = SPAMv2(16, size=6, gain="scaled_sigmoid").eval()
    c.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(1, 6, 6, 16)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
        assert (ya - yb).abs().max() > 1e-3
        assert torch.allclose(ya, yc, atol=1e-6)  # alpha = 1 is the plain sigmoid
        c.alpha.fill_(3.0)
        assert (c(x) - ya).abs().max() > 1e-3


def test_gains_at_native_size_are_the_plain_sigmoid_and_resize_otherwise():
    m = _randomize(SPAMv2(8, size=(6, 10)))
    theta = torch.cat([m.filter_1, m.filter_2, m.filter_3, m.filter_4])
    assert torch.equal(m.gains((6, 10)), torch.sigmoid(theta))
    assert torch.equal(m.gains((6, 11)), torch.sigmoid(theta))  # same half width 6
    resized = m.gains((9, 14))
    assert resized.shape == (8, 9, 8)
    # align_corners=True keeps the four corners of every channel exactly
    assert torch.allclose(resized[:, [0, -1]][:, :, [0, -1]], torch.sigmoid(theta)[:, [0, -1]][:, :, [0, -1]], atol=1e-6)


def test_fused_gradients_equal_the_reference():
    ref, fused = _pair(size=5)
    ref.train(), fused.train()
    x = torch.randn(2, 7, 5, 16)
    (ref(x) ** 2).sum().backward()
    (fused(x) ** 2).sum().backward()
    for (name, pr), pf in zip(ref.named_parameters(), fused.parameters()):
        assert torch.allclose(pf.grad, pr.grad, atol=1e-4 * max(1.0, pr.grad.abs().max().item())), name


def test_gain_cache_is_used_in_eval_and_never_stale():
    ref, fused = _pair(size=6)
    x = torch.randn(1, 8, 10, 16)
    with torch.no_grad():
        first = fused(x)
        assert fused._cache, "eval + no_grad should cache the resized gains and the kernel"
        assert torch.equal(fused(x), first)
        # an in-place update (an optimizer step, load_state_dict) bumps the version: recomputed
        fused.filter_2.add_(1.0)
        fused.local_conv_3.weight.mul_(-1.0)
        ref.load_state_dict(fused.state_dict())
        assert_scaled_close(fused(x), ref(x), rel=1e-5)
        assert (fused(x) - first).abs().max() > 1e-3
    fused.train()
    fused(x)  # training mode with autograd: nothing cached, and what eval cached is dropped
    assert not fused._cache


def test_head_major_released_keys_map_and_layout_is_checked():
    src = _randomize(SPAMv2(16, size=6, layout="head_major", gain="scaled_sigmoid"))
    sd = src.state_dict()
    released = {k: v for k, v in sd.items() if not k.startswith(("filter_", "local_conv_", "alpha"))}
    released["filter"] = torch.cat([sd[f"filter_{i}"] for i in range(1, 5)])
    for i in range(4):
        released[f"local_convs.{i}.weight"] = sd[f"local_conv_{i + 1}.weight"]
        released[f"local_convs.{i}.bias"] = sd[f"local_conv_{i + 1}.bias"]
    released["scale.alpha"] = sd["alpha"]
    assert checkpoint_layout(released) == "head_major" and checkpoint_layout(sd) == "interleave"
    dst = SPAMv2(16, size=6, layout="head_major", gain="scaled_sigmoid")
    dst.load_state_dict(dict(released), strict=True)
    assert all(torch.equal(sd[k], v) for k, v in dst.state_dict().items())
    plain = SPAMv2(16, size=6, layout="head_major")  # the submitted forward ignores alpha
    plain.load_state_dict(dict(released), strict=True)
    with pytest.raises(FreqkitError, match="head_major"):
        SPAMv2(16, size=6).load_state_dict(dict(released))


def test_bfloat16_weights_and_autocast():
    ref, fused = _pair(size=6)
    x = torch.randn(2, 7, 9, 16)
    with torch.no_grad():
        want = fused(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = fused(x)
        half = fused.to(torch.bfloat16)(x.bfloat16())
    assert half.dtype == torch.bfloat16
    scale = want.abs().max()
    assert (half.float() - want).abs().max() < 0.05 * scale
    assert (auto.float() - want).abs().max() < 0.05 * scale


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(FreqkitError, match="divisible"):
        SPAMv2(18)
    with pytest.raises(FreqkitError, match="layout"):
        SPAMv2(16, layout="channels")
    with pytest.raises(FreqkitError, match="gain"):
        SPAMv2(16, gain="tanh")
    with pytest.raises(FreqkitError, match="channels-last"):
        SPAMv2(16)(torch.randn(1, 16, 5, 5))


def test_fused_projection_equals_the_grouped_conv():
    # the fast path runs proj.0 (a grouped 1x1 conv) as one batched matrix product on CPU
    _, fused = _pair(dim=16, size=6)
    z = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        assert_scaled_close(fused._proj_fused(z), fused.proj(z).permute(0, 2, 3, 1), rel=1e-6)


def test_in_place_inference_path_equals_the_autograd_path_and_keeps_hooks():
    # no_grad overwrites the fused path's own intermediates (GELU, spectrum, q * s); with autograd nothing is reused
    _, fused = _pair(dim=16, size=6)
    x = torch.randn(2, 6, 6, 16, generator=torch.Generator().manual_seed(3))
    x_before = x.clone()
    with_graph = fused(x)
    with torch.no_grad():
        fast = fused(x)
        seen = []
        handle = fused.query[1].register_forward_hook(lambda mod, args, out: seen.append(out.clone()))
        hooked = fused(x)
        handle.remove()
    assert torch.equal(x, x_before)  # the input is never written
    assert torch.equal(fast, with_graph.detach())
    assert torch.equal(hooked, fast)
    assert len(seen) == 1 and torch.equal(seen[0], F.gelu(fused.query[0](x)).detach())
