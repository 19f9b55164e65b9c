"""Splitting timm token sequences into prefix tokens and spatial maps."""

import pytest
import torch

from freqkit.errors import FreqkitError
from freqkit.spectral import infer_grid, split_tokens


def test_split_tokens_prefix_first_row_major_patches():
    b, p, h, w, c = 2, 3, 4, 5, 6
    x = torch.randn(b, p + h * w, c)
    prefix, fmap = split_tokens(x, (h, w))
    assert prefix.shape == (b, p, c) and fmap.shape == (b, c, h, w)
    torch.testing.assert_close(prefix, x[:, :p])
    for i in range(h):
        for j in range(w):
            torch.testing.assert_close(fmap[:, :, i, j], x[:, p + i * w + j])


def test_split_tokens_roundtrip_like_timm_patch_embed():
    # timm's PatchEmbed flattens (B, C, H, W) with flatten(2).transpose(1, 2), then prepends CLS
    fmap = torch.randn(2, 4, 3, 5)
    cls = torch.randn(2, 1, 4)
    tokens = torch.cat([cls, fmap.flatten(2).transpose(1, 2)], dim=1)
    prefix, back = split_tokens(tokens, (3, 5))
    assert torch.equal(back, fmap) and torch.equal(prefix, cls)
    none, back = split_tokens(fmap.flatten(2).transpose(1, 2), (3, 5))
    assert none.shape == (2, 0, 4) and torch.equal(back, fmap)


def test_split_tokens_errors():
    with pytest.raises(FreqkitError, match="needs 16"):
        split_tokens(torch.zeros(1, 10, 3), (4, 4))
    with pytest.raises(FreqkitError, match=r"\(B, N, C\)"):
        split_tokens(torch.zeros(10, 3), (3, 3))
    with pytest.raises(FreqkitError, match="grid_size"):
        split_tokens(torch.zeros(1, 10, 3), (3, 0))
    with pytest.raises(FreqkitError, match="grid_size"):
        split_tokens(torch.zeros(1, 10, 3), 9)


def test_infer_grid():
    assert infer_grid(197, 1) == (14, 14)
    assert infer_grid(16, 0) == (4, 4)
    assert infer_grid(1, 0) == (1, 1)
    with pytest.raises(FreqkitError, match="grid_size"):
        infer_grid(197, 0)
    with pytest.raises(FreqkitError, match="no spatial tokens"):
        infer_grid(1, 1)
