"""freqkit's registered models keep timm's model contract, checked the way timm's own model tests
check timm's models: forward, backward reaching every parameter, pretrained_cfg fields that
describe the model, forward_features / forward_head(pre_logits), features_only and
forward_intermediates, torch.fx tracing (forward and backward), torch.export, and the TorchScript
exclusions with their reasons.

Every registered freqkit model is checked. The runtime checks build each one with fewer blocks
per stage (widths, heads, mixers, stems and heads as registered) and small inputs, so the whole
file stays fast; the pretrained_cfg checks build the registered model itself, on the meta device.
"""

from __future__ import annotations

import fnmatch
import math

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules, model_entrypoint
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import freqkit.models  # noqa: F401  (registers the models)

MODELS = sorted(n for n in timm.list_models() if model_entrypoint(n).__module__.startswith("freqkit."))
FAMILY = {"spanet": "spanet", "spanetv2": "spanetv2", "fdam_vit": "fdam", "antismooth_vit": "antismooth"}
# the smallest model of each architecture runs in the default suite; the wider / deeper variants
# of the same code run with -m slow
FAST = {
    "spanet_small",
    "spanetv2_s18_pure",
    "spanetv2_s18_hybrid",
    "deit_tiny_fdam_patch16_224",
    "fdam_vit_tiny_dense",
    "deit_small_attnscale_patch16_224",
    "deit_small_featscale_patch16_224",
    "deit_small_gfsa_patch16_224",
}
ALL = [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in MODELS]

# timm's model tests run these through test_model_default_cfgs_non_std: token outputs, not maps
NON_STD = ["deit*"]

# TorchScript (torch.jit.script, deprecated in PyTorch 2.x) is not supported; torch.export is the
# deployment path (tested below). One line per excluded family, as timm's EXCLUDE_JIT_FILTERS;
# test_torchscript_exclusions_are_current checks that each is still needed.
TORCHSCRIPT_EXCLUDED = {
    "spanet_*": "SPAM builds its spectral constants per input size in Python (a per-module cache, float64 bases) and formats its errors with tuple(x.shape)",
    "spanetv2_*": "SPAM v2 caches derived kernels keyed on parameter versions in a Python object and formats its errors with tuple(x.shape)",
    "deit_*_fdam_*": "convert's grid hook is a Python object; the attention passes its filter a closure (ctx.attend); FreqScale builds DFT constants in numpy",
    "fdam_vit_*_dense": "the attention passes its filter a closure (ctx.attend); FreqScale builds DFT constants in numpy",
    "deit_*_attnscale_*": "convert's grid hook is a Python object; the attention passes its filter a closure (ctx.attend)",
    "deit_*_featscale_*": "convert's grid hook is a Python object; the attention defines its attend closure per call",
    "deit_*_gfsa_*": "convert's grid hook is a Python object; the attention passes its filter a closure (ctx.attend)",
}


def _family(name: str) -> str:
    return FAMILY[model_entrypoint(name).__module__.rsplit(".", 1)[-1]]


def _small(name: str) -> dict:
    """Arguments that shrink ``name`` to one block per stage (two for ViTs) and small images."""
    fam = _family(name)
    if fam in ("spanet", "spanetv2"):
        return dict(depths=(1, 1, 1, 1))
    if name.startswith("fdam_vit"):
        return dict(depth=2)
    return dict(depth=2, img_size=64)


def _size(name: str) -> int:
    return 64


def _create(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **{**_small(name), **kw})


def _x(name: str, batch: int = 1, size: int = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    s = size or _size(name)
    return torch.randn(batch, 3, s, s, generator=g)


def _is_non_std(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in NON_STD)


def _fx_model(model: torch.nn.Module) -> torch.nn.Module:
    """A torchvision FX feature extractor returning the model's output, traced as timm's tests trace."""
    kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs
    )


def test_every_family_is_registered():
    assert {_family(n) for n in MODELS} == set(FAMILY.values())
    assert len(MODELS) == 22


@pytest.mark.parametrize("name", ALL)
def test_forward_features_head_and_grad_checkpointing(name):
    model = _create(name).eval()
    x = _x(name)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(model.forward_head(feats), out, rtol=0, atol=0)
        model.set_grad_checkpointing(True)
        again = model(x)
    assert out.shape == (1, model.num_classes or model.head_hidden_size) and torch.isfinite(out).all()
    assert pre.shape == (1, model.head_hidden_size)
    torch.testing.assert_close(again, out, rtol=1e-4, atol=1e-5 * float(out.abs().max()))


@pytest.mark.parametrize("name", ALL)
def test_backward_reaches_every_parameter(name):
    model = _create(name, num_classes=42).train()
    out = model(_x(name, batch=2))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert out.shape == (2, 42) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)  # cheap: the registered model on the meta device
def test_pretrained_cfg_describes_the_model(name):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)  # the registered model itself, no memory
    cfg = model.pretrained_cfg
    keys = set(model.state_dict())
    for field in ("input_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier"):
        assert cfg.get(field) is not None, f"pretrained_cfg[{field!r}] is missing"
    assert len(cfg["input_size"]) == 3 and cfg["input_size"][0] == 3 and 0 < cfg["crop_pct"] <= 1
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    assert cfg["first_conv"] + ".weight" in keys
    assert cfg["num_classes"] == model.num_classes
    if cfg["num_classes"]:
        assert cfg["classifier"] + ".weight" in keys
        assert model.state_dict()[cfg["classifier"] + ".weight"].shape[0] == cfg["num_classes"]
    if not _is_non_std(name):
        assert cfg.get("pool_size") is not None, "pretrained_cfg['pool_size'] is missing"


@pytest.mark.parametrize("name", [n for n in ALL if not _is_non_std(getattr(n, "values", [n])[0])])
def test_pool_size_and_unpooled_outputs(name):
    """At the cfg's input size, forward_features is an unpooled map of pool_size; global_pool='' keeps it."""
    cfg = timm.get_pretrained_cfg(name).to_dict()
    model = _create(name).eval()
    x = torch.randn(1, *cfg["input_size"])
    fmt = getattr(model, "output_fmt", "NCHW")
    hw, ch = get_spatial_dim(fmt), get_channel_dim(fmt)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert tuple(feats.shape[i] for i in hw) == tuple(cfg["pool_size"]) and feats.shape[ch] == model.num_features
        model.reset_classifier(0)
        pooled = model(x)
        assert pooled.shape == pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.ndim == 4 and tuple(unpooled.shape[i] for i in hw) == tuple(cfg["pool_size"])
        bare = _create(name, num_classes=0, global_pool="").eval()
        assert bare(x).shape == unpooled.shape


@pytest.mark.parametrize("name", ALL)
def test_features_only_and_forward_intermediates(name):
    x = _x(name)
    # the small ViTs have 2 blocks: take both (timm's default is the last 3)
    net = _create(name, features_only=True, **({"out_indices": (0, 1)} if _is_non_std(name) else {})).eval()
    channels, reductions = net.feature_info.channels(), net.feature_info.reduction()
    assert len(channels) >= 3 or _is_non_std(name)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == len(channels)
    for c, r, o in zip(channels, reductions, outs):
        assert o.shape[0] == 1 and o.shape[1] == c and torch.isfinite(o).all()
        assert o.shape[-2] <= math.ceil(x.shape[-2] / r) + 1 and o.shape[-1] <= math.ceil(x.shape[-1] / r) + 1
    model = _create(name).eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
    assert len(inter) == len(model.feature_info)


@pytest.mark.parametrize("name", ALL)
def test_fx_forward_equals_eager(name):
    model = _create(name).eval()
    x = _x(name)
    with torch.inference_mode():
        want = model(x)
        got = tuple(_fx_model(model)(x).values())[0]
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ALL)
def test_fx_backward_reaches_every_parameter(name):
    model = _create(name, num_classes=42).train()
    fx = _fx_model(model)
    out = tuple(fx(_x(name, batch=2)).values())[0]
    out.mean().backward()
    missing = [n for n, p in fx.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert out.shape == (2, 42)


# one model per family in the default suite (one small size); every model runs with -m slow
_EXPORT_FAST = ["spanet_small", "spanetv2_s18_hybrid", "fdam_vit_tiny_dense", "deit_small_gfsa_patch16_224"]


def _check_export(model: torch.nn.Module, sizes: list[int]) -> None:
    model.eval()
    for s in sizes:
        x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            want = model(x)
            got = torch.export.export(model, (x,)).module()(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("name", _EXPORT_FAST)
def test_torch_export_small(name):
    """torch.export of the smallest build (one block per stage) at a small input."""
    kw = dict(depths=(1, 1, 1, 1)) if _family(name).startswith("spanet") else dict(depth=1, img_size=64)
    if name.startswith("fdam_vit"):
        kw.pop("img_size")
    torch.manual_seed(0)
    _check_export(timm.create_model(name, **kw), [64])


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_torch_export_default_size(name):
    """torch.export at the cfg's input size, and at 160 where the model takes any size (fewer blocks per stage)."""
    cfg = timm.get_pretrained_cfg(name).to_dict()
    sizes = [cfg["input_size"][-1]] + ([] if cfg.get("fixed_input_size") else [160])
    kw = {k: v for k, v in _small(name).items() if k != "img_size"}
    torch.manual_seed(0)
    _check_export(timm.create_model(name, **kw), sizes)


def test_torchscript_exclusions_cover_every_model():
    for name in MODELS:
        assert any(fnmatch.fnmatch(name, p) for p in TORCHSCRIPT_EXCLUDED), (
            f"{name}: scriptable or add an exclusion with a reason"
        )
    for pattern in TORCHSCRIPT_EXCLUDED:
        assert fnmatch.filter(MODELS, pattern), f"exclusion {pattern!r} matches no registered model"


@pytest.mark.parametrize("name", ["spanet_small", "spanetv2_s18_pure", "deit_small_featscale_patch16_224"])
def test_torchscript_exclusions_are_current(name):
    """If one of these becomes scriptable, drop its exclusion (and script it in this file instead)."""
    model = _create(name).eval()
    with timm.layers.set_layer_config(scriptable=True), pytest.raises(Exception):  # noqa: B017  (TorchScript raises many error types)
        torch.jit.script(model)
