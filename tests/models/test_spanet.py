"""SPANet backbones: spec parameter counts, any input size, features, released checkpoints, timm API."""

from __future__ import annotations

import pytest
import timm
import torch
from closeness import assert_scaled_close

import freqkit.models  # noqa: F401  (registers the models)
from freqkit.errors import FreqkitError
from freqkit.layers import SPAM
from freqkit.models import load_checkpoint
from freqkit.models.spanet import SPANet, checkpoint_filter_fn, released_key

TINY = dict(depths=(1, 1, 2, 1), dims=(24, 48, 72, 96), num_classes=10)

# SPANet / SPANetV2 papers: released parameter counts, which include the fixed masks (3 per block, H0 x W0 each)
SPEC = {
    "spanet_small": ((4, 4, 12, 4), 28_659_780),
    "spanet_medium": ((6, 6, 18, 6), 41_768_978),
    "spanet_mediumx": ((8, 8, 24, 8), 54_878_176),
    "spanet_base": ((6, 6, 18, 6), 75_938_194),
    "spanet_basex": ((8, 8, 24, 8), 99_827_680),
}


def _tiny(**kw) -> SPANet:
    torch.manual_seed(0)
    return SPANet(**dict(TINY, **kw)).eval()


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Give norms, scales and biases non-trivial values (as the fixtures do) so that nothing hides."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def test_registered_names_are_freqkits():
    # timm has no spanet* model of its own: every registered spanet* name resolves to this module
    assert sorted(n for n in timm.list_models("spanet*") if not n.startswith("spanetv2")) == sorted(SPEC)
    for name in SPEC:
        assert timm.models.model_entrypoint(name).__module__ == "freqkit.models.spanet"


@pytest.mark.parametrize("name", list(SPEC))
def test_parameter_counts_match_the_spec_without_the_masks(name):
    depths, released = SPEC[name]
    masks = 3 * sum(d * (56 // 2**i) ** 2 for i, d in enumerate(depths))
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == released - masks
    if name == "spanet_small":
        assert released - masks == 28_605_096


@pytest.mark.parametrize("hw", [(64, 64), (96, 160), (224, 224)])
def test_any_input_divisible_by_32(hw):
    model = _tiny()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *hw)).shape == (1, 10)


def test_sizes_not_divisible_by_32_raise():
    with pytest.raises(FreqkitError, match="divisible by 32"):
        _tiny()(torch.randn(1, 3, 100, 64))


def test_fused_and_reference_paths_give_the_same_logits():
    fast = _perturb(_tiny())
    ref = _tiny(fused=False)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert_scaled_close(fast(x), ref(x), rel=1e-4)


def test_features_only_shapes_strides_and_stage_norms():
    feats = timm.create_model("spanet_small", features_only=True, **{k: v for k, v in TINY.items() if k != "num_classes"}).eval()
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    assert feats.feature_info.channels() == [24, 48, 72, 96]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = feats(x)
    assert [tuple(o.shape) for o in outs] == [(1, 24, 16, 24), (1, 48, 8, 12), (1, 72, 4, 6), (1, 96, 2, 3)]
    # each output is its stage's map through that stage's GroupNorm
    inner = feats.model
    with torch.no_grad():
        y = x
        for i in range(4):
            y = inner.stages[i](inner.downsample_layers[i](y))
            assert_scaled_close(outs[i], getattr(inner, f"norm{i}")(y), rel=1e-5)


def test_forward_intermediates_and_head():
    model = _tiny()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert [t.shape[1] for t in inter] == [24, 48, 72, 96]
        assert torch.equal(final, inter[-1])
        assert torch.allclose(model.forward_head(final), model(x))
        assert model.forward_head(final, pre_logits=True).shape == (2, 96)
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt="NHWC", intermediates_only=True)
        assert torch.equal(nhwc[0], inter[1].permute(0, 2, 3, 1))
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 96)


def _released_state_dict(model: SPANet) -> dict[str, torch.Tensor]:
    """A state dict under the released names (network.<n>, patch_embed, masks), built by hand."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("downsample_layers.0."):
            k = "patch_embed." + k[len("downsample_layers.0.") :]
        elif k.startswith("downsample_layers."):
            i, rest = k[len("downsample_layers.") :].split(".", 1)
            k = f"network.{2 * int(i) - 1}.{rest}"
        elif k.startswith("stages."):
            i, rest = k[len("stages.") :].split(".", 1)
            k = f"network.{2 * int(i)}.{rest}"
        out[k] = v
    for name, mod in model.named_modules():
        if isinstance(mod, SPAM):
            n, b = name.split(".")[1:3]
            side = 56 // 2 ** int(n)
            for i in range(3):
                out[f"network.{2 * int(n)}.{b}.token_mixer.sps.{i}.filter"] = mod.mask((side, side), i, shifted=True)[None]
    return out


def test_released_checkpoint_round_trip_and_mask_check(tmp_path):
    src = _perturb(_tiny())
    released = _released_state_dict(src)
    assert "network.2.0.token_mixer.proj_in.weight" in released and "network.3.proj.weight" in released
    assert released_key("network.5.proj.bias") == "downsample_layers.3.proj.bias"
    dst = _tiny()
    load_checkpoint(dst, released, filter_fn=checkpoint_filter_fn)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    # through timm, as a user loads the released .pth / .safetensors
    from safetensors.torch import save_file

    path = tmp_path / "spanet-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in released.items()}, str(path))
    via_timm = timm.create_model(
        "spanet_small", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **TINY
    ).eval()
    with torch.no_grad():
        assert torch.equal(via_timm(x), src(x))
    # a checkpoint whose masks belong to another radius is refused
    with pytest.raises(FreqkitError, match="radius"):
        load_checkpoint(_tiny(radius=(1, 2, 1, 1)), released, filter_fn=checkpoint_filter_fn)


def test_gradient_checkpointing_matches():
    model = _perturb(_tiny()).train()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for g0, p in zip(grads, model.parameters()):
        assert_scaled_close(p.grad, g0, rel=1e-5)


def test_bfloat16_weights_and_autocast():
    model = _perturb(_tiny())
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
    model = _tiny()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert_scaled_close(compiled(x), model(x), rel=1e-6)


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager():
    model = _tiny()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_scaled_close(torch.compile(model)(x), model(x), rel=1e-4)


def test_smp_unet_on_spanet_and_probe_captures_stages():
    smp = pytest.importorskip("segmentation_models_pytorch")
    unet = smp.Unet("tu-spanet_small", encoder_weights=None, classes=3).eval()
    with torch.no_grad():
        assert unet(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    from freqkit.probe import capture

    cap = capture(_tiny(), torch.randn(1, 3, 64, 64))
    assert cap.names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert [tuple(cap[n].map.shape) for n in cap.names] == [(1, 24, 16, 16), (1, 48, 8, 8), (1, 72, 4, 4), (1, 96, 2, 2)]
