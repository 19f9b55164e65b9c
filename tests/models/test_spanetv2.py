"""SPANetV2 backbones: spec parameter counts, hybrid attention, features, released keys, timm API."""

from __future__ import annotations

import pytest
import timm
import torch
from closeness import assert_scaled_close

import freqkit.models  # noqa: F401  (registers the models)
from freqkit.errors import FreqkitError
from freqkit.models import load_checkpoint
from freqkit.models.spanetv2 import GridAttention, SPANetV2, checkpoint_filter_fn

TINY = dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), num_classes=10)
HYBRID = ("spam", "spam", "mixattn", "attn")

# SPANet / SPANetV2 papers: parameter counts of the released code (in millions, two decimals)
SPEC = {
    "spanetv2_s18_pure": 29.16,
    "spanetv2_s18_hybrid": 26.99,
    "spanetv2_s36_pure": 44.10,
    "spanetv2_s36_hybrid": 40.67,
    "spanetv2_m36_pure": 62.93,
    "spanetv2_m36_hybrid": 58.33,
    "spanetv2_b36_pure": 109.56,
    "spanetv2_b36_hybrid": 101.80,
}


def _tiny(**kw) -> SPANetV2:
    torch.manual_seed(0)
    return SPANetV2(**dict(TINY, **kw)).eval()


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim <= 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 3:  # spectral gains: make them vary
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def test_registered_names_are_freqkits():
    assert sorted(timm.list_models("spanetv2*")) == sorted(SPEC)
    for name in SPEC:
        assert timm.models.model_entrypoint(name).__module__ == "freqkit.models.spanetv2"


@pytest.mark.parametrize("name", list(SPEC))
def test_parameter_counts_match_the_spec(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == SPEC[name]


@pytest.mark.parametrize("mixers", [("spam",) * 4, HYBRID])
@pytest.mark.parametrize("hw", [(64, 64), (96, 160)])
def test_any_input_divisible_by_32_and_fused_equals_reference(mixers, hw):
    fast = _perturb(_tiny(mixers=mixers))
    ref = _tiny(mixers=mixers, fused=False)  # reference SPAM v2 and explicit softmax(q k^T) V
    ref.load_state_dict(fast.state_dict())
    assert all(not m.fused for m in ref.modules() if isinstance(m, GridAttention))
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        got, want = fast(x), ref(x)
    assert got.shape == (1, 10)
    assert_scaled_close(got, want, rel=1e-4)


def test_sizes_not_divisible_by_32_raise():
    with pytest.raises(FreqkitError, match="divisible by 32"):
        _tiny()(torch.randn(1, 3, 64, 80 + 8))


def test_mix_attention_adds_a_depthwise_conv_of_the_values():
    attn = GridAttention(64, head_dim=32, value_kernel=7).eval()
    with torch.no_grad():
        attn.local_conv.weight.normal_()
    x = torch.randn(2, 5, 6, 64)
    b, h, w, c = x.shape
    t = x.reshape(b, h * w, c)
    qkv = (t @ attn.qkv.weight.T).reshape(b, h * w, 3, 2, 32).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = torch.softmax(q @ k.transpose(-1, -2) / 32**0.5, dim=-1)
    merged = lambda y: y.transpose(1, 2).reshape(b, h, w, c)  # noqa: E731
    vmap = merged(v).permute(0, 3, 1, 2)
    conv = torch.nn.functional.conv2d(vmap, attn.local_conv.weight, padding=3, groups=c).permute(0, 2, 3, 1)
    want = (merged(a @ v) + conv) @ attn.proj.weight.T
    with torch.no_grad():
        assert_scaled_close(attn(x), want, rel=1e-5)
    assert set(attn.state_dict()) == {"qkv.weight", "proj.weight", "local_conv.weight"}


def test_features_only_nchw_strides_and_stage_norms():
    kw = {k: v for k, v in TINY.items() if k != "num_classes"}
    feats = timm.create_model("spanetv2_s18_hybrid", features_only=True, out_indices=(1, 3), **kw).eval()
    assert feats.feature_info.reduction() == [8, 32]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = feats(x)
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 12), (1, 128, 2, 3)]
    inner = feats.model
    assert hasattr(inner, "norm1") and hasattr(inner, "norm3")
    with torch.no_grad():
        y = x
        for i in range(4):
            y = inner.stages[i](inner.downsample_layers[i](y))
            if i == 1:
                assert_scaled_close(outs[0], inner.norm1(y).permute(0, 3, 1, 2), rel=1e-5)


def test_forward_intermediates_head_and_reset():
    model = _tiny(mixers=HYBRID)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert [tuple(t.shape) for t in inter] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 96, 4, 4), (2, 128, 2, 2)]
        assert torch.allclose(model.forward_head(final), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)


def test_released_keys_load_unchanged_and_layout_is_checked(tmp_path):
    src = _perturb(_tiny(mixers=HYBRID))
    sd = src.state_dict()
    for key in (
        "downsample_layers.0.post_norm.weight",
        "downsample_layers.1.pre_norm.weight",
        "stages.0.0.token_mixer.filter_1",
        "stages.2.0.token_mixer.local_conv.weight",
        "stages.3.0.res_scale1.scale",
        "stages.0.0.mlp.act.scale",
        "head.fc1.weight",
        "head.norm.bias",
    ):
        assert key in sd
    dst = _tiny(mixers=HYBRID)
    load_checkpoint(dst, dict(sd), filter_fn=checkpoint_filter_fn)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    # the later head-major variant's keys are refused by an interleave model, with the fix named
    head_major = {k: v for k, v in sd.items() if "stages.0.0.token_mixer.filter_" not in k}
    head_major["stages.0.0.token_mixer.filter"] = torch.cat([sd[f"stages.0.0.token_mixer.filter_{i}"] for i in range(1, 5)])
    with pytest.raises(FreqkitError, match="head_major"):
        load_checkpoint(_tiny(mixers=HYBRID), head_major, filter_fn=checkpoint_filter_fn)


def test_gradient_checkpointing_matches():
    model = _perturb(_tiny(mixers=HYBRID)).train()
    x = torch.randn(1, 3, 64, 64)
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for g0, p in zip(grads, model.parameters()):
        assert_scaled_close(p.grad, g0, rel=1e-5)


@pytest.mark.parametrize("mixers", [("spam",) * 4, HYBRID])
def test_bfloat16_weights_and_autocast(mixers):
    model = _perturb(_tiny(mixers=mixers))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(x)
        half = model.to(torch.bfloat16)(x.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all() and torch.isfinite(auto).all()
    assert (half.float() - want).abs().max() < 0.1 * want.abs().max() + 0.05
    assert (auto.float() - want).abs().max() < 0.1 * want.abs().max() + 0.05


def test_torch_compile_captures_one_graph():
    model = _tiny(mixers=HYBRID)
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert_scaled_close(compiled(x), model(x), rel=1e-6)


def test_probe_captures_stage_maps():
    from freqkit.probe import capture

    cap = capture(_tiny(), torch.randn(1, 3, 64, 64))
    assert cap.names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert [tuple(cap[n].map.shape) for n in cap.names] == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 96, 4, 4), (1, 128, 2, 2)]


def test_bad_arguments_raise():
    with pytest.raises(FreqkitError, match="mixer"):
        SPANetV2(mixers=("spam", "spam", "conv", "attn"))
    with pytest.raises(FreqkitError, match="head dim"):
        SPANetV2(dims=(32, 64, 80, 128), mixers=HYBRID)
