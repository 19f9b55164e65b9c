"""Shape-only runs on the meta device (FLOP counters, sharded init): the frequency layers give the CPU shapes."""

from __future__ import annotations

import pytest
import torch

from freqkit.layers import SPAM, FreqScale, SPAMv2


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: SPAM(16, radius=2), (2, 16, 8, 10)),
        (lambda: SPAM(16, radius=2, fused=False), (2, 16, 8, 10)),
        (lambda: SPAMv2(16), (2, 8, 10, 16)),
        (lambda: FreqScale(16), (2, 16, 8, 10)),
        (lambda: FreqScale(16, mode="static"), (2, 16, 8, 10)),
    ],
)
def test_meta_forward_matches_cpu_shapes(build, shape):
    torch.manual_seed(0)
    cpu = build()
    want = cpu(torch.randn(shape))
    with torch.device("meta"):
        meta = build()
    got = meta(torch.empty(shape, device="meta"))
    assert got.device.type == "meta" and got.shape == want.shape and got.dtype == want.dtype
