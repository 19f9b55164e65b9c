"""FDAM models: timm registration, DeiT weights as a starting point, the dense backbone (position
embedding, feature levels and strides, released checkpoints), deployment (torch.compile, ONNX)."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from closeness import assert_scaled_close
from safetensors.torch import save_file

import freqkit
from freqkit.errors import FreqkitError
from freqkit.models.fdam_vit import FdamViTDense, load_fdam_checkpoint

NAMES = {
    "deit_tiny_fdam_patch16_224",
    "deit_small_fdam_patch16_224",
    "deit_base_fdam_patch16_224",
    "fdam_vit_tiny_dense",
    "fdam_vit_small_dense",
    "fdam_vit_base_dense",
}
TINY = dict(embed_dim=32, depth=2, num_heads=2)


def _dense(**kw) -> FdamViTDense:
    return timm.create_model("fdam_vit_tiny_dense", **{**TINY, **kw}).eval()


def _randomize_fdam(model: torch.nn.Module) -> None:
    """Order-one FDAM parameters, so that a lost or misplaced tensor changes the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "filter." in name or "complex_weights" in name or "ls1" in name or "ls2" in name:
                p.normal_(0, 0.5)


def _to_released(sd: dict) -> dict:
    """freqkit names -> the released names (written independently of remap_released_keys)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("attn.filter.", "attn.").replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")
        out[k] = v
    return out


def test_registered_names():
    assert set(timm.list_models("*fdam*")) == NAMES


def test_deit_fdam_starts_from_timm_deit_weights(tmp_path):
    kw = dict(img_size=32, patch_size=8, depth=2, num_classes=5)
    deit = timm.create_model("deit_tiny_patch16_224", **kw).eval()
    save_file(deit.state_dict(), tmp_path / "deit.safetensors")
    overlay = dict(file=str(tmp_path / "deit.safetensors"), num_classes=5)  # else timm drops the 5-class head
    exact = timm.create_model("deit_tiny_fdam_patch16_224", pretrained=True, pretrained_cfg_overlay=overlay, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exact(x), deit(x), atol=1e-6, rtol=1e-6)
    released_init = timm.create_model(
        "deit_tiny_fdam_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=overlay,
        attinv_init_value=1e-5,
        freqscale_init_std=1e-5,
        **kw,
    )
    own = released_init.state_dict()
    assert all(torch.equal(own[k], v) for k, v in deit.state_dict().items())
    assert torch.all(released_init.blocks[0].attn.filter.lf_gamma == 1e-5)  # FDAM kept at init


def test_fdam_parameter_overhead_deit_small():
    with torch.device("meta"):
        fdam = timm.create_model("deit_small_fdam_patch16_224")
        base = timm.create_model("deit_small_patch16_224")
    extra = sum(p.numel() for p in fdam.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == 12 * (5390 + 2 * 21506) == 580824


def test_dense_features_only_strides_on_odd_grid():
    model = timm.create_model("fdam_vit_tiny_dense", features_only=True, **TINY)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 48, 80))  # 3 x 5 patches
    assert [tuple(f.shape) for f in feats] == [(1, 32, 12, 20), (1, 32, 6, 10), (1, 32, 3, 5), (1, 32, 1, 2)]
    deit = timm.create_model("deit_tiny_fdam_patch16_224", img_size=64, features_only=True, embed_dim=32, depth=3, num_heads=2)
    assert [tuple(f.shape) for f in deit(torch.randn(2, 3, 64, 64))] == [(2, 32, 4, 4)] * 3


def test_dense_smp_unet_encoder():
    smp = pytest.importorskip("segmentation_models_pytorch")
    net = smp.Unet("tu-fdam_vit_tiny_dense", encoder_weights=None, classes=3, decoder_channels=(32, 16, 8, 8, 8)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_dense_position_embedding_and_no_cls_no_final_norm():
    model = _dense(neck=False, block_indices=[1])
    x = torch.randn(1, 3, 48, 80)
    tokens, grid = model._embed(x)
    pos = model.pos_embed.reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(3, 5), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    patches = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    assert grid == (3, 5)
    torch.testing.assert_close(tokens, patches + pos)
    with torch.no_grad():
        (last,) = model.forward_intermediates(x, intermediates_only=True)
        feats = model.forward_features(x)  # raw output of the last block as a map, no CLS, no norm
    assert feats.shape == (1, 32, 3, 5)
    torch.testing.assert_close(last, feats)


def _checkpoint_source(model: FdamViTDense) -> dict:
    _randomize_fdam(model)
    sd = {"backbone." + k: v.clone() for k, v in _to_released(model.state_dict()).items()}
    sd["decode_head.conv_seg.weight"] = torch.randn(4, 32, 1, 1)  # an mmsegmentation segmentor checkpoint
    return sd


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "dict"])
def test_load_released_checkpoint(tmp_path, fmt):
    src = _dense()
    sd = _checkpoint_source(src)
    if fmt == "safetensors":
        source = tmp_path / "fdam.safetensors"
        save_file(sd, source)
    elif fmt == "pth":
        source = tmp_path / "fdam.pth"
        torch.save({"meta": {"iter": 3}, "state_dict": sd}, source)
    else:
        source = sd
    dst = _dense()
    missing, unexpected = load_fdam_checkpoint(dst, source)
    assert missing == [] and unexpected == []
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        for a, b in zip(
            dst.forward_intermediates(x, intermediates_only=True), src.forward_intermediates(x, intermediates_only=True)
        ):
            torch.testing.assert_close(a, b)
    assert freqkit.load_fdam_checkpoint is load_fdam_checkpoint


def test_load_reports_missing_keys_and_resizes_position_embedding():
    src = _dense(img_size=64, neck=True)  # 4 x 4 position grid
    sd = _to_released(src.state_dict())
    with pytest.raises(FreqkitError, match="neck=True"):
        load_fdam_checkpoint(_dense(), sd)  # a neck in the checkpoint, none in the model
    del sd["up1.0.weight"]
    with pytest.raises(FreqkitError, match=r"missing keys \(1\): up1.0.weight"):
        load_fdam_checkpoint(_dense(neck=True), sd)
    dst = _dense(neck=True)  # 14 x 14 position grid
    missing, unexpected = load_fdam_checkpoint(dst, sd, strict=False)
    assert missing == ["up1.0.weight"] and unexpected == []
    ref = F.interpolate(
        src.pos_embed.reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(14, 14), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(dst.pos_embed.data, ref.flatten(2).transpose(1, 2))


def test_dense_accepts_timm_deit_and_pretrained_overlay(tmp_path):
    deit = timm.create_model("deit_tiny_patch16_224", **TINY)  # CLS token, head, final norm, 197 positions
    save_file(deit.state_dict(), tmp_path / "deit.safetensors")
    dense = timm.create_model(
        "fdam_vit_tiny_dense", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "deit.safetensors")), **TINY
    )
    torch.testing.assert_close(dense.blocks[1].attn.qkv.weight, deit.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(dense.pos_embed.data, deit.pos_embed.data[:, 1:])
    released = _checkpoint_source(_dense())
    save_file(released, tmp_path / "fdam.safetensors")
    again = timm.create_model(
        "fdam_vit_tiny_dense", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "fdam.safetensors")), **TINY
    )
    torch.testing.assert_close(again.blocks[0].attn.filter.hf_gamma, released["backbone.blocks.0.attn.hf_gamma"])


def test_errors():
    model = _dense()
    with pytest.raises(FreqkitError, match="not divisible by the patch size 16"):
        model(torch.randn(1, 3, 40, 48))
    with pytest.raises(FreqkitError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(FreqkitError, match="needs 4 block_indices"):
        _dense(block_indices=[0, 1], neck=True)
    with pytest.raises(FreqkitError, match="no final norm"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), norm=True)
    with pytest.raises(FreqkitError, match="at least 2 x 2 patches"):
        _dense(neck=True).forward_intermediates(torch.randn(1, 3, 16, 32))
    with pytest.raises(FreqkitError, match="divisible by num_heads"):
        _dense(num_heads=3)


def test_classifier_head_and_gradient_checkpointing():
    model = _dense(num_classes=4).train()
    _randomize_fdam(model)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 4)
    grads = torch.autograd.grad(y.square().sum(), list(model.parameters()), allow_unused=True)
    model.set_grad_checkpointing(True)
    y2 = model(x)
    grads2 = torch.autograd.grad(y2.square().sum(), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(y2, y)
    for g, g2 in zip(grads, grads2):
        assert (g is None) == (g2 is None)
        if g is not None:
            assert_scaled_close(g2, g, rel=1e-5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 32)


def test_bfloat16_autocast_and_weights():
    model = _dense()
    _randomize_fdam(model)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = model.forward_intermediates(x, intermediates_only=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model.forward_intermediates(x, intermediates_only=True)
        half = model.to(torch.bfloat16).forward_intermediates(x.bfloat16(), intermediates_only=True)
    for r, a, h in zip(ref, auto, half):
        assert h.dtype == torch.bfloat16 and torch.isfinite(a.float()).all()
        scale = r.abs().max()
        assert (a.float() - r).abs().max() < 0.1 * scale and (h.float() - r).abs().max() < 0.1 * scale


def test_compile_traces_without_graph_breaks():
    for model, x in (
        (_dense(), torch.randn(1, 3, 48, 80)),
        (timm.create_model("deit_tiny_fdam_patch16_224", img_size=32, patch_size=8, **TINY).eval(), torch.randn(2, 3, 32, 32)),
    ):
        _randomize_fdam(model)
        with torch.no_grad():
            torch.testing.assert_close(torch.compile(model, backend="eager", fullgraph=True)(x), model(x))


@pytest.mark.slow
def test_compile_inductor_matches_eager():
    model = _dense()
    _randomize_fdam(model)
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), atol=1e-5, rtol=1e-4)


class _Levels(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(self.model.forward_intermediates(x, intermediates_only=True))


def _onnx_roundtrip(tmp_path, dynamo: bool) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = timm.create_model("fdam_vit_tiny_dense", embed_dim=64, depth=2, num_heads=2).eval()
    _randomize_fdam(model)
    x = torch.randn(1, 3, 64, 96)
    wrapped = _Levels(model).eval()
    with torch.no_grad():
        ref = wrapped(x)
    path = tmp_path / "fdam.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (x,), str(path), opset_version=18, dynamo=dynamo, input_names=["x"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert len(outs) == 4
    for o, r in zip(outs, ref):
        torch.testing.assert_close(torch.from_numpy(o), r, atol=1e-4, rtol=1e-4)


def test_onnx_export_legacy_exporter(tmp_path):
    """The legacy exporter has no FFT: FreqScale switches to its exact matrix-DFT path while exporting."""
    _onnx_roundtrip(tmp_path, dynamo=False)


def test_onnx_export_dynamo(tmp_path):
    """torch.export-based exporter (a few seconds); FreqScale uses the same matrix-DFT path."""
    _onnx_roundtrip(tmp_path, dynamo=True)
