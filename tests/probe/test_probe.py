"""freqkit.probe: captures leave the output bitwise unchanged; attention maps match a manual softmax."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.layers.attention import AttentionFilter
from freqkit.layers.block import FreqBlock
from freqkit.probe import capture

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def _vit(name: str = "deit_tiny_patch16_224", **kw) -> nn.Module:
    args = dict(img_size=32, patch_size=8, **TINY)
    args.update(kw)
    return timm.create_model(name, **args).eval()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _manual_attention(block: nn.Module, x_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) and A V from the block's weights, written out independently of the probe."""
    attn = block.attn
    h = block.norm1(x_in)
    b, n, c = h.shape
    heads = attn.num_heads
    d = attn.qkv.out_features // 3 // heads
    qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias)
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    split = lambda t: t.reshape(b, n, heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = attn.q_norm(split(q)), attn.k_norm(split(k)), split(v)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d)
    a = torch.exp(scores - scores.amax(-1, keepdim=True))
    a = a / a.sum(-1, keepdim=True)
    return a, a @ v, v


def _block_inputs(model: nn.Module, x: torch.Tensor, cap) -> list[torch.Tensor]:
    with torch.no_grad():
        first = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    return [first] + [layer.tokens for layer in cap.layers[:-1]]


@pytest.mark.parametrize("qk_norm", [False, True])
def test_output_bitwise_unchanged_and_attention_matches_manual(qk_norm):
    model = _vit(qk_norm=qk_norm)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    plain = capture(model, x)
    full = capture(model, x, attention=True)
    assert torch.equal(plain.output, ref) and torch.equal(full.output, ref)
    assert all(blk.attn.fused_attn for blk in model.blocks)  # the model's own path is untouched
    assert _no_hooks(model)
    assert plain.names == ["blocks.0", "blocks.1"] and plain.layers[0].attn is None
    for layer, blk, x_in in zip(full.layers, model.blocks, _block_inputs(model, x, full)):
        a, av, v = _manual_attention(blk, x_in)
        assert layer.attn.shape == (2, 2, 17, 17)
        torch.testing.assert_close(layer.attn, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.attn.sum(-1), torch.ones(2, 2, 17), rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.attn_out, av.transpose(1, 2).reshape(2, 17, 32), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.v, v.transpose(1, 2).reshape(2, 17, 32))
        # the captured A V, projected, is what the fused attention layer returned
        with torch.no_grad():
            torch.testing.assert_close(blk.attn.proj(layer.attn_out), blk.attn(blk.norm1(x_in)), rtol=1e-5, atol=1e-5)
    for layer, blk, x_in in zip(plain.layers, model.blocks, _block_inputs(model, x, plain)):
        with torch.no_grad():
            assert torch.equal(layer.tokens, blk(x_in))


def test_distilled_deit_has_two_prefix_tokens():
    model = _vit("deit_tiny_distilled_patch16_224")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    cap = capture(model, x, attention=True)
    assert torch.equal(cap.output, ref)
    layer = cap.layers[0]
    assert layer.num_prefix_tokens == 2 and layer.grid_size == (4, 4)
    assert layer.tokens.shape == (2, 18, 32) and layer.attn.shape == (2, 2, 18, 18)
    assert torch.equal(layer.spatial_tokens(), layer.tokens[:, 2:])
    assert layer.spatial_map().shape == (2, 32, 4, 4)
    assert layer.v_map().shape == (2, 32, 4, 4)


def test_register_tokens_without_class_token():
    model = _vit("vit_base_patch16_reg4_gap_256")
    assert model.num_prefix_tokens == 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    cap = capture(model, x, attention=True)
    assert torch.equal(cap.output, ref)
    assert cap[-1].num_prefix_tokens == 4 and cap[-1].tokens.shape == (1, 20, 32)
    torch.testing.assert_close(cap[-1].attn.sum(-1), torch.ones(1, 2, 20), rtol=0, atol=1e-6)


def test_dynamic_img_size_non_square_grid_is_rows_by_columns():
    model = _vit("vit_tiny_patch16_224", dynamic_img_size=True)
    x = torch.randn(2, 3, 32, 56)  # 4 x 7 patches
    with torch.no_grad():
        ref = model(x)
    cap = capture(model, x, attention=True)
    assert torch.equal(cap.output, ref)
    layer = cap["blocks.1"]
    assert layer.grid_size == (4, 7)
    assert layer.attn.shape == (2, 2, 29, 29)
    m = layer.spatial_map()
    assert m.shape == (2, 32, 4, 7)
    # token p = 1 + r * W + c sits at row r, column c (timm's row-major patch order)
    assert torch.equal(m[:, :, 2, 5], layer.tokens[:, 1 + 2 * 7 + 5])
    # the patch embedding (NHWC for dynamic sizes) captured by name comes back as (B, C, H, W)
    pe = capture(model, x, layers=["patch_embed"])[0]
    assert pe.map.shape == (2, 32, 4, 7)


def test_freqkit_blocks_and_filter_output():
    class Sharpen(AttentionFilter):
        def forward(self, out, ctx):
            return 2.0 * out - ctx.uniform(ctx.v)

    model = _vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    for i in range(len(model.blocks)):
        model.blocks[i] = FreqBlock.from_timm(model.blocks[i])
    cap = capture(model, x, attention=True)
    assert torch.equal(cap.output, ref)  # FreqBlock without parts is the timm block
    for layer, blk, x_in in zip(cap.layers, model.blocks, _block_inputs(model, x, cap)):
        a, av, _ = _manual_attention(blk, x_in)
        torch.testing.assert_close(layer.attn, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.attn_out, av.transpose(1, 2).reshape(2, 17, 32), rtol=1e-5, atol=1e-6)

    model.blocks[0].attn.filter = Sharpen()
    with torch.no_grad():
        ref = model(x)
    cap = capture(model, x, attention=True)
    assert torch.equal(cap.output, ref)
    x_in = _block_inputs(model, x, cap)[0]
    a, av, v = _manual_attention(model.blocks[0], x_in)
    filtered = 2.0 * av - v.mean(dim=-2, keepdim=True)
    torch.testing.assert_close(cap[0].attn, a, rtol=1e-5, atol=1e-6)  # plain softmax
    torch.testing.assert_close(cap[0].attn_out, filtered.transpose(1, 2).reshape(2, 17, 32), rtol=1e-5, atol=1e-5)
    assert _no_hooks(model.blocks[0].attn.filter)


def test_resnet_stage_maps_match_manual_forward():
    model = timm.create_model("resnet18").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        stem = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        l1 = model.layer1(stem)
        l2 = model.layer2(l1)
    cap = capture(model, x, attention=True)  # attention=True is a no-op on conv stages
    assert torch.equal(cap.output, ref)
    assert cap.names == ["layer1", "layer2", "layer3", "layer4"]
    assert torch.equal(cap["layer1"].map, l1) and torch.equal(cap["layer2"].map, l2)
    assert cap["layer4"].map.shape == (1, 512, 1, 1) and cap["layer2"].grid_size == (4, 4)
    assert not cap["layer1"].is_tokens and cap["layer1"].attn is None


def test_metaformer_stages_are_found():
    model = timm.create_model("convformer_s18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    cap = capture(model, x)
    assert torch.equal(cap.output, ref)
    assert cap.names == [f"stages.{i}" for i in range(4)]
    assert [tuple(l.map.shape[1:]) for l in cap.layers] == [(64, 16, 16), (128, 8, 8), (320, 4, 4), (512, 2, 2)]
    assert cap["stages.1"].spatial_tokens().shape == (1, 64, 128)


def test_hooks_removed_on_error_and_bad_input():
    model = _vit()
    with pytest.raises((AssertionError, RuntimeError)):
        capture(model, torch.randn(1, 3, 40, 40), attention=True)  # strict image size asserts inside timm
    assert _no_hooks(model)
    with pytest.raises(FreqkitError, match="no module named"):
        capture(model, torch.randn(1, 3, 32, 32), layers=["blocks.9"])
    with pytest.raises(FreqkitError, match=r"\(B, 3, H, W\)"):
        capture(model, torch.randn(3, 32, 32))
    assert _no_hooks(model)
