"""FreqScale against a brute-force per-channel filter in the frequency domain (explicit DFT sums in
numpy), the FFT and matrix-DFT paths against each other, bank resizing and its cache, token
layout with prefix tokens, parameter counts (the released DeiT-S configuration), half precision and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from closeness import assert_scaled_close

from freqkit.errors import FreqkitError
from freqkit.layers import FreqScale
from freqkit.layers.freqscale import bicubic_matrix


def _dft_filter_bruteforce(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """y = irfft2(rfft2(x, ortho) * weight, ortho) for one (H, W) map by explicit sums.

    Forward: X[k, l] = sum_{h,w} x[h, w] exp(-2 pi i (k h / H + l w / W)) / sqrt(H W), l <= W // 2.
    Inverse of a half spectrum Z: y[h, w] = Re sum_{k, l <= W//2} a_l Z[k, l] exp(+2 pi i (...)) / sqrt(H W),
    a_l = 1 at DC and (even W) Nyquist, 2 elsewhere (each bin stands for itself and its mirror).
    """
    h, w = x.shape
    rw = w // 2 + 1
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    y = np.zeros((h, w))
    for k in range(h):
        for l in range(rw):
            phase = np.exp(2j * np.pi * (k * hh / h + l * ww / w))
            xk = (x * np.conj(phase)).sum() / np.sqrt(h * w)
            a = 1.0 if (l == 0 or (w % 2 == 0 and l == w // 2)) else 2.0
            y += (a * weight[k, l] * xk * phase).real / np.sqrt(h * w)
    return y


def _randomized(fs: FreqScale) -> FreqScale:
    with torch.no_grad():
        fs.complex_weights.normal_(0, 0.5)
        if fs.reweight is not None:
            fs.reweight.act.scale.fill_(1.3)
            fs.reweight.act.bias.fill_(-0.2)
    return fs.eval()


def _filters_by_hand(fs: FreqScale, x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel real filters (B, C, S, S//2+1) from the released routing formula."""
    b, c = x.shape[:2]
    k = fs.complex_weights.detach().double()
    if fs.mode == "static":
        return k.unsqueeze(0).expand(b, -1, -1, -1)
    gap = x.double().mean(dim=(2, 3))
    r = fs.reweight
    hid = gap @ r.fc1.weight.double().t()
    hid = r.act.scale.double() * F.relu(hid) ** 2 + r.act.bias.double()
    route = torch.tanh(hid @ r.fc2.weight.double().t()).view(b, fs.groups, fs.num_filters)
    cg = c // fs.groups
    out = torch.zeros(b, c, *k.shape[-2:], dtype=torch.float64)
    for ch in range(c):
        out[:, ch] = torch.einsum("bn,nij->bij", route[:, ch // cg], k[:, ch % cg])
    return out


@pytest.mark.parametrize("mode", ["group", "dynamic", "static"])
@pytest.mark.parametrize("size", [6, 5])  # even W has a Nyquist column, odd has none
def test_matches_bruteforce_frequency_filter(mode, size):
    fs = _randomized(FreqScale(8, mode=mode, num_filters=3, groups=2, size=size, reduction=4))
    x = torch.randn(2, 8, size, size)
    with torch.no_grad():
        y = fs(x)
    with torch.no_grad():
        filt = _filters_by_hand(fs, x).numpy()
    for b in range(2):
        for c in range(8):
            ref = _dft_filter_bruteforce(x[b, c].double().numpy(), filt[b, c])
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=2e-5, rtol=1e-4)


def test_symmetric_filter_is_a_full_plane_filter():
    """A bank that is even in k acts as the real full-plane filter W(k, l) = W(-k, -l) (numpy.fft reference)."""
    fs = FreqScale(4, mode="static", size=8).eval()
    with torch.no_grad():
        k = torch.rand(4, 8, 5)
        fs.complex_weights.copy_((k + k[:, (-torch.arange(8)) % 8]) / 2)
    x = torch.randn(1, 4, 8, 8)
    half = fs.complex_weights.detach().double().numpy()
    full = np.concatenate([half, half[:, (-np.arange(8)) % 8][:, :, 1:4][:, :, ::-1]], axis=2)
    ref = np.fft.ifft2(np.fft.fft2(x[0].double().numpy()) * full).real
    with torch.no_grad():
        assert_scaled_close(fs(x)[0], ref, rel=1e-5)


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 1), (3, 7), (6, 4), (5, 5), (12, 20), (2, 2)])
def test_matmul_dft_equals_fft(hw):
    fft = _randomized(FreqScale(16, groups=4, transform="fft"))
    mat = FreqScale(16, groups=4, transform="matmul").eval()
    mat.load_state_dict(fft.state_dict())
    x = torch.randn(2, 16, *hw)
    with torch.no_grad():
        torch.testing.assert_close(mat(x), fft(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("n_in,n_out", [(14, 12), (8, 11), (14, 1), (8, 1), (1, 5), (5, 5)])
def test_resize_matrix_is_bicubic_align_corners(n_in, n_out):
    k = torch.randn(2, 3, n_in, 4, dtype=torch.float64)
    ref = F.interpolate(k, size=(n_out, 4), mode="bicubic", align_corners=True)
    torch.testing.assert_close(torch.einsum("is,bcst->bcit", bicubic_matrix(n_in, n_out), k), ref)


def test_resized_bank_equals_interpolate():
    fs = _randomized(FreqScale(32, groups=4))
    bank = fs.resized_bank(12, 20)  # (n, 12 * 11, C/g)
    ref = F.interpolate(fs.complex_weights.detach(), size=(12, 11), mode="bicubic", align_corners=True)
    torch.testing.assert_close(bank, ref.permute(0, 2, 3, 1).reshape(4, 12 * 11, 8), atol=1e-5, rtol=1e-5)


def test_parameter_counts_match_design():
    c, s, n, g = 384, 14, 4, 16
    half = s // 2 + 1
    hidden = c // 16
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(FreqScale(c, mode="group")) == n * (c // g) * s * half + c * hidden + hidden * g * n + 2 == 21506
    assert count(FreqScale(c, mode="dynamic")) == n * c * s * half + c * hidden + hidden * n + 2 == 181346
    assert count(FreqScale(c, mode="static")) == c * s * half == 43008


@pytest.mark.parametrize("transform", ["matmul", "fft"])
def test_tokens_prefix_bypass_and_map_equivalence(transform):
    fs = _randomized(FreqScale(16, groups=4, transform=transform))
    h, w, p = 3, 5, 2
    t = torch.randn(2, p + h * w, 16)
    with torch.no_grad():
        out = fs.apply_tokens(t, (h, w), p)
        spatial = t[:, p:].transpose(1, 2).reshape(2, 16, h, w)
        ref = (spatial + fs(spatial)).flatten(2).transpose(1, 2)
    assert torch.equal(out[:, :p], t[:, :p])
    torch.testing.assert_close(out[:, p:], ref, atol=1e-6, rtol=1e-5)
    out_grad = fs.apply_tokens(t.requires_grad_(), (h, w), p)  # autograd path (no buffer reuse)
    torch.testing.assert_close(out_grad.detach(), out, atol=1e-6, rtol=1e-5)


def test_identity_at_init():
    t = torch.randn(2, 17, 16)
    assert torch.equal(FreqScale(16, groups=4, init_std=0.0).eval().apply_tokens(t, (4, 4), 1), t)
    fs = FreqScale(16, groups=4).eval()  # released init: trunc-normal std 1e-5 (|K| <= 2e-5), |route| < 1
    with torch.no_grad():
        delta = fs.apply_tokens(t, (4, 4), 1) - t
    # |W| <= n * 2e-5 per bin; the half-plane filter's gain is at most 2 max|W| (DC / mirror pairs)
    assert 0 < delta.norm() <= 2 * 4 * 2e-5 * t[:, 1:].norm()


def test_resize_cache_follows_weight_updates():
    fs = _randomized(FreqScale(16, groups=4))
    x = torch.randn(2, 16, 12, 20)  # differs from 14 x 14: the bank is resized
    with torch.no_grad():
        before = fs(x)
        assert fs.resized_bank(12, 20) is fs.resized_bank(12, 20)  # cached in no-grad use
    opt = torch.optim.SGD(fs.parameters(), lr=0.5)
    fs.train()
    fs(x).square().mean().backward()
    assert fs.complex_weights.grad.abs().sum() > 0  # gradients reach the bank through the resize
    opt.step()
    fs.eval()
    fresh = FreqScale(16, groups=4).eval()
    fresh.load_state_dict(fs.state_dict())
    with torch.no_grad():
        after = fs(x)
        torch.testing.assert_close(after, fresh(x))
        assert not torch.allclose(after, before)
        fs.load_state_dict({k: v * 2 if k == "complex_weights" else v for k, v in fs.state_dict().items()})
        fresh.load_state_dict(fs.state_dict())
        torch.testing.assert_close(fs(x), fresh(x))


def test_inference_mode_cache_is_usable_with_autograd():
    fs = FreqScale(16, groups=4)
    x = torch.randn(1, 16, 6, 9)
    with torch.inference_mode():
        fs.eval()(x)
    fs.train()(x.requires_grad_()).sum().backward()
    assert x.grad is not None


def test_bfloat16_autocast_and_weights():
    fs = _randomized(FreqScale(16, groups=4))
    t = torch.randn(2, 1 + 35, 16)
    with torch.no_grad():
        ref = fs.apply_tokens(t, (5, 7), 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fs.apply_tokens(t.bfloat16(), (5, 7), 1)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)
        fs16 = fs.to(torch.bfloat16)
        y16 = fs16.apply_tokens(t.bfloat16(), (5, 7), 1)
        assert (
            y16.dtype == torch.bfloat16 and fs16(t[:, 1:].bfloat16().transpose(1, 2).reshape(2, 16, 5, 7)).dtype == torch.bfloat16
        )
        torch.testing.assert_close(y16.float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("transform", ["matmul", "fft"])
def test_transform_stays_float32_under_autocast(transform):
    fs = _randomized(FreqScale(16, mode="static", transform=transform))  # no routing MLP: all of it is the transform
    x = torch.randn(2, 16, 6, 9)
    with torch.no_grad():
        ref = fs(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fs(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_errors_are_clear():
    fs = FreqScale(16, groups=4)
    with pytest.raises(FreqkitError, match="do not fill the 3x4 grid plus 1 prefix"):
        fs.apply_tokens(torch.randn(1, 12, 16), (3, 4), 1)
    with pytest.raises(FreqkitError, match="never set"):
        fs.apply_tokens(torch.randn(1, 12, 16), None)
    with pytest.raises(FreqkitError, match="not divisible by groups=16"):
        FreqScale(24, groups=16)
    with pytest.raises(FreqkitError, match=r"\(B, 16, H, W\)"):
        fs(torch.randn(1, 8, 4, 4))
    with pytest.raises(FreqkitError, match="unknown mode"):
        FreqScale(16, mode="adaptive")


@pytest.mark.parametrize("mode", ["group", "dynamic", "static"])
@pytest.mark.parametrize("size", [(14, 14), (5, 7), (12, 20), (1, 4)])
def test_fused_path_equals_the_reference_path(mode, size):
    torch.manual_seed(0)
    fused = _randomized(FreqScale(16, mode=mode, groups=4))
    ref = FreqScale(16, mode=mode, groups=4, fused=False).eval()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        want, got = ref(x), fused(x)
    torch.testing.assert_close(got, want, atol=1e-5 * float(want.abs().max()), rtol=1e-4)
    # gradients reach the same parameters with the same values
    fused.train(), ref.train()
    (fused(x) ** 2).sum().backward()
    (ref(x) ** 2).sum().backward()
    for (name, pf), pr in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, atol=1e-4 * float(pr.grad.abs().max()), rtol=1e-3, msg=name)


def test_tokens_inference_path_still_runs_forward_hooks():
    # the inference path of apply_tokens writes into the output tokens directly; with a hook it goes through __call__
    fs = _randomized(FreqScale(16, groups=4))
    t = torch.randn(2, 1 + 3 * 5, 16)
    seen = []
    with torch.no_grad():
        plain = fs.apply_tokens(t, (3, 5), 1)
        handle = fs.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
        hooked = fs.apply_tokens(t, (3, 5), 1)
        handle.remove()
    assert seen == [torch.Size([2, 16, 3, 5])]
    assert torch.equal(hooked, plain)
