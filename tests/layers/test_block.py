"""FreqBlock takes the token grid explicitly; the stored grid is only the fallback for converted timm ViTs."""

from __future__ import annotations

import pytest
import timm
import torch

import freqkit.models  # noqa: F401  (registers the models)
from freqkit.errors import FreqkitError
from freqkit.layers import set_grid
from freqkit.models.fdam_vit import build_fdam_block


def _block(seed: int = 0):
    torch.manual_seed(seed)
    blk = build_fdam_block(16, 2, init_values=0.5, attinv=dict(init_value=0.3), freqscale=dict(groups=4)).eval()
    with torch.no_grad():
        for fs in (blk.freq_scale_1, blk.freq_scale_2):
            fs.complex_weights.normal_(0, 0.5)
    return blk


def _by_hand(blk, x: torch.Tensor, grid: tuple[int, int], p: int) -> torch.Tensor:
    """The block written out, FreqScale applied to the spatial tokens as a (B, C, H, W) map."""

    def fs(mod, t):
        b, n, c = t.shape
        spatial = t[:, p:].transpose(1, 2).reshape(b, c, *grid)
        return torch.cat([t[:, :p], (spatial + mod(spatial)).flatten(2).transpose(1, 2)], dim=1)

    a = fs(blk.freq_scale_1, blk.attn(blk.norm1(x)))
    x = x + blk.ls1(a)
    return x + blk.ls2(fs(blk.freq_scale_2, blk.mlp(blk.norm2(x))))


@pytest.mark.parametrize("grid,p", [((3, 5), 0), ((4, 2), 1)])
def test_block_called_directly_with_a_grid(grid, p):
    blk = _block()
    x = torch.randn(2, p + grid[0] * grid[1], 16)
    with torch.no_grad():
        got = blk(x, grid_size=grid, num_prefix_tokens=p)
        want = _by_hand(blk, x, grid, p)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    assert blk.grid_size is None  # nothing stored


def test_block_without_grid_raises_and_explicit_grid_wins():
    blk = _block()
    x = torch.randn(1, 6, 16)
    with pytest.raises(FreqkitError, match="grid_size=\\(H, W\\)"):
        blk(x)
    set_grid(blk, (6, 1), 0)  # a stale stored grid (a converted ViT's fallback)
    with torch.no_grad():
        torch.testing.assert_close(blk(x, grid_size=(2, 3)), _by_hand(blk, x, (2, 3), 0))
        torch.testing.assert_close(blk(x), _by_hand(blk, x, (6, 1), 0))


def test_dense_model_keeps_no_grid_state_between_sizes():
    model = timm.create_model("fdam_vit_tiny_dense", embed_dim=16, depth=1, num_heads=2).eval()
    with torch.no_grad():
        for fs in (model.blocks[0].freq_scale_1, model.blocks[0].freq_scale_2):
            fs.complex_weights.normal_(0, 0.5)
        small = model.forward_features(torch.ones(1, 3, 32, 48) * torch.arange(48.0) / 48)
        large = model.forward_features(torch.randn(1, 3, 64, 64))
        again = model.forward_features(torch.ones(1, 3, 32, 48) * torch.arange(48.0) / 48)
    assert small.shape[-2:] == (2, 3) and large.shape[-2:] == (4, 4)
    assert torch.equal(small, again)
    assert model.blocks[0].grid_size is None
