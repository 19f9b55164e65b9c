"""StarReLU against its formula s * relu(x)^2 + b in float64, and the in-place inference path against the plain one."""

from __future__ import annotations

import torch

from freqkit.layers.starrelu import StarReLU


def _act(inplace: bool) -> StarReLU:
    act = StarReLU(inplace=inplace)
    with torch.no_grad():
        act.scale.fill_(0.8944)
        act.bias.fill_(-0.4472)
    return act


def test_matches_the_formula_in_float64():
    x = torch.randn(4, 7, 33, generator=torch.Generator().manual_seed(0)) * 3
    want = 0.8944 * torch.relu(x.double()) ** 2 - 0.4472
    got = _act(False)(x)
    torch.testing.assert_close(got.double(), want, atol=1e-6 * float(want.abs().max()), rtol=1e-6)


def test_in_place_path_is_bitwise_the_plain_one():
    x = torch.randn(4, 7, 33, generator=torch.Generator().manual_seed(1)) * 3
    plain = _act(False)(x).detach()
    # with autograd the in-place module leaves its input alone
    act = _act(True)
    x_copy = x.clone()
    assert torch.equal(act(x_copy).detach(), plain) and torch.equal(x_copy, x)
    with torch.no_grad():
        out = act(x_copy)
    assert out.data_ptr() == x_copy.data_ptr()  # written into the input
    assert torch.equal(out, plain)


def test_in_place_module_keeps_gradients_and_other_dtypes():
    act = _act(True)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    act(x).sum().backward()
    r = torch.relu(x.detach())
    torch.testing.assert_close(x.grad, 2 * 0.8944 * r)
    torch.testing.assert_close(act.scale.grad, (r**2).sum().reshape(1))
    xb = x.detach().bfloat16()
    with torch.no_grad():
        yb = act(xb.clone())
    assert yb.dtype == torch.bfloat16
    assert torch.equal(yb, _act(False)(xb).detach())
