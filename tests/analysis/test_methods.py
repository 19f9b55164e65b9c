"""Method-visualization data checked against direct computations from the layers' parameters and inputs."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F

import freqkit.models  # noqa: F401  (registers the models with timm)
from freqkit import convert
from freqkit.analysis import methods as M
from freqkit.analysis.methods.attinv import _synthetic_stacks
from freqkit.layers import Attention, AttInv, FreqScale
from freqkit.spectral import full_plane, local_response


def _randomize(model, seed=0, scale=0.5):
    """Non-trivial AttInv / FreqScale parameters (they start at zero / identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lf_gamma", "hf_gamma", "complex_weights")) or ".reweight." in name or "dy_freq" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def fdam():
    torch.manual_seed(0)
    return _randomize(timm.create_model("deit_tiny_fdam_patch16_224", img_size=64, depth=3, num_classes=5))


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _attn_inputs(model, images):
    """The normalized block input x (B, N, C) of every Attention module, recorded by forward pre-hooks."""
    seen, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, Attention):
            handles.append(mod.register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, a[0].detach().clone())))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return seen


@torch.no_grad()
def _direct_gates(layer: AttInv, x: torch.Tensor):
    """Sl, Sh (B, N, heads) from the released formulas, not from AttInv.gates."""
    act = layer.dy_freq_starrelu
    u = act.scale * torch.relu(x) ** 2 + act.bias
    sl = torch.tanh(u @ layer.dy_freq_2.weight.T + layer.dy_freq_2.bias)
    t = F.softplus(u @ layer.dy_freq.weight.T + layer.dy_freq.bias)
    sh = 2 * t**2 / (t**2 + 0.3678)
    return sl, sh


@torch.no_grad()
def test_attinv_map_equals_the_applied_gates(fdam, images):
    with torch.no_grad():
        before = fdam(images)
    data = M.attinv_modulation(fdam, images, num_images=3)
    with torch.no_grad():
        assert torch.equal(fdam(images), before)  # hooks are gone and changed nothing
    inputs = _attn_inputs(fdam, images)
    assert data["grid"] == [4, 4] and data["num_prefix_tokens"] == 1
    assert len(data["layers"]) == 3
    for name, high, low in zip(data["layers"], data["high"], data["low"]):
        layer = fdam.get_submodule(name)
        x = inputs[name.rsplit(".", 1)[0]]
        sl, sh = _direct_gates(layer, x)
        d = layer.head_dim
        # per channel c: g_hf[c] * Sh[head(c)], then the mean over all channels; CLS dropped, row-major grid
        per_channel_high = sh.repeat_interleave(d, dim=-1) * layer.hf_gamma
        per_channel_low = 1 + sl.repeat_interleave(d, dim=-1) * layer.lf_gamma
        want_high = per_channel_high.mean(-1)[:, 1:].reshape(-1, 4, 4)
        want_low = per_channel_low.mean(-1)[:, 1:].reshape(-1, 4, 4)
        got_high, got_low = torch.tensor(high), torch.tensor(low)
        assert want_high.abs().max() > 1e-2  # the gates are far from their zero init
        torch.testing.assert_close(got_high, want_high, rtol=1e-4, atol=1e-5 * float(want_high.abs().max()))
        torch.testing.assert_close(got_low, want_low, rtol=1e-4, atol=1e-5)
    json.dumps(data)


def _full_gain_check(fs: FreqScale, a_map: torch.Tensor, gain: torch.Tensor):
    """ifft2(fft2(a) * gain) over the centred full-plane gain must equal a + FreqScale(a)."""
    with torch.no_grad():
        want = a_map + fs(a_map)
    got = torch.fft.ifft2(torch.fft.fft2(a_map.double()) * torch.fft.ifftshift(gain.double(), dim=(-2, -1))).real
    scale = float(want.abs().max())
    torch.testing.assert_close(got.float(), want, rtol=0, atol=1e-5 * scale)
    # and the filter is not the identity: the check above is not trivially met
    assert float((want - a_map).abs().max()) > 1e-3 * scale


@pytest.mark.parametrize("mode", ["group", "dynamic", "static"])
def test_freqscale_gain_is_the_filter_the_module_applies(mode, images):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=0)
    convert(vit, "freqscale", freqscale_mode=mode)
    _randomize(vit, seed=2)
    # the attention output a (B, N, C) is what freq_scale_1 filters (block: a = attn(norm1(x)); FS1(a))
    outs, handles = {}, []
    for i, blk in enumerate(vit.blocks):
        handles.append(blk.attn.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o.detach().clone())))
    filters = M.freqscale_filters(vit, images)
    for h in handles:
        h.remove()
    assert set(filters) == {f"blocks.{i}.freq_scale_{j}" for i in range(2) for j in (1, 2)}
    for i in range(2):
        gain = filters[f"blocks.{i}.freq_scale_1"]
        assert gain.shape == ((1 if mode == "static" else 3), 192, 4, 4)
        a_map = outs[i][:, 1:].reshape(3, 4, 4, 192).permute(0, 3, 1, 2)
        _full_gain_check(vit.blocks[i].freq_scale_1, a_map, gain)
    data = M.freqscale_gain(vit, images)
    entry = next(e for e in data["modules"] if e["name"] == "blocks.0.freq_scale_1")
    g = filters["blocks.0.freq_scale_1"].mean(dim=1)
    torch.testing.assert_close(torch.tensor(entry["mean"]), g.mean(0), rtol=1e-6, atol=1e-6)
    assert (entry["std"] is None) == (mode == "static")
    json.dumps(data)


def test_synthetic_stacks_are_band_pass_and_band_stop():
    syn = _synthetic_stacks()
    bp, bs = syn["band_pass"]["stack"], syn["band_stop"]["stack"]
    assert max(bp[1:-1]) > 2 * max(bp[0], bp[-1])  # peak inside, low at both ends
    assert min(bs[1:-1]) < 0.6 * min(bs[0], bs[-1])  # dip inside


@torch.no_grad()
def test_attinv_response_uses_the_layer_attention(fdam, images):
    data = M.attinv_response(fdam, images, layer="blocks.1.attn.filter", image_index=1)
    assert data["partner"] == "blocks.2.attn.filter"
    x = _attn_inputs(fdam, images[1:2])["blocks.1.attn"]
    attn = fdam.blocks[1].attn.attention_matrix(x)  # the explicit softmax attention (1, heads, N, N)
    layer = fdam.blocks[1].attn.filter
    sl, sh = _direct_gates(layer, x)
    heads, d = layer.num_heads, layer.head_dim
    for key in ("high", "low"):
        e = data["positions"][key]
        q = 1 + e["token"]
        want_a = local_response(attn[:, :, q : q + 1], (4, 4), 1, queries="all")[0, :, 0].mean(0)
        torch.testing.assert_close(torch.tensor(e["attention"]), want_a, rtol=1e-4, atol=1e-5)
        low = 1 + sl[0, q] * layer.lf_gamma.view(heads, d).mean(1)
        high = sh[0, q] * layer.hf_gamma.view(heads, d).mean(1)
        eye = torch.zeros(attn.shape[-1])
        eye[q] = 1
        rows = low[:, None] * attn[0, :, q] + high[:, None] * (eye - attn[0, :, q])
        want_c = local_response(rows[None, :, None], (4, 4), 1, queries="all")[0, :, 0].mean(0)
        torch.testing.assert_close(torch.tensor(e["combination"]), want_c, rtol=1e-4, atol=1e-5)
        prod = torch.tensor(e["combination"]) * torch.tensor(e["stack"]["partner_combination"])
        torch.testing.assert_close(torch.tensor(e["stack"]["product"]), prod)
    weights = torch.tensor(data["high_weight_map"]).reshape(-1)
    assert data["positions"]["high"]["token"] == int(weights.argmax())
    assert data["positions"]["low"]["token"] == int(weights.argmin())


@torch.no_grad()
def test_spam_filters_are_the_masks_and_sigmoid_gains(images):
    torch.manual_seed(0)
    spn = timm.create_model("spanet_small", num_classes=3, depths=(1, 1, 2, 1))  # fewer blocks: faster, same stages
    data = M.spam_filters(spn, images)
    assert [s["size"] for s in data["spam"]] == [[16, 16], [8, 8], [4, 4], [2, 2]]
    first = spn.stages[0][0].token_mixer
    s0 = data["spam"][0]
    # the released masks are fftshift-ed: |k| < r -> lambda, = r -> 1/3, > r -> 1 - lambda (r = 2 in stage 0)
    ky = torch.arange(16)[:, None] - 8
    kx = torch.arange(16)[None, :] - 8
    dist = torch.sqrt((ky**2 + kx**2).double())
    for lam, mask in zip(first.lambdas, s0["masks"]):
        want = torch.where(dist < 2, lam, torch.where(dist > 2, 1 - lam, 1 / 3)).float()
        torch.testing.assert_close(torch.tensor(mask), want)
    v2 = timm.create_model("spanetv2_s18_pure", num_classes=3, img_size=64, depths=(1, 2, 1, 1), dims=(16, 32, 64, 96))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in v2.named_parameters():
            if ".filter_" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    d2 = M.spam_filters(v2, images)
    st = d2["spamv2"][1]
    assert st["size"] == [8, 8] and st["blocks"] == len(v2.stages[1])
    want = 0
    for blk in v2.stages[1]:
        mixer = blk.token_mixer
        for_scales = []
        for i in range(mixer.num_scales):
            theta = getattr(mixer, f"filter_{i + 1}")  # (G, 8, 5): the stage's native grid, no resize
            for_scales.append(torch.fft.fftshift(full_plane(torch.sigmoid(theta), 8), dim=(-2, -1)).mean(0))
        want = want + torch.stack(for_scales)
    torch.testing.assert_close(torch.tensor(st["gains"]), want / len(v2.stages[1]), rtol=1e-5, atol=1e-6)
    json.dumps(d2)


def test_method_figures_data_lists_what_applies(fdam, images):
    torch.manual_seed(0)
    base = timm.create_model("deit_tiny_patch16_224", img_size=64, depth=2, num_classes=5).eval()
    data = M.method_figures_data({"base": base, "fdam": fdam}, images, num_images=2)
    assert data["applies"] == ["attinv_modulation", "freqscale_gain", "features", "attinv_response"]
    assert set(data["attinv_modulation"]) == {"fdam"} and set(data["freqscale_gain"]) == {"fdam"}
    assert data["features"]["models"] == ["base", "fdam"]
    # the feature map is the token RMS over channels of the last block, relative to the image RMS
    with torch.no_grad():
        fmap = base.forward_intermediates(images[:2], indices=[1], intermediates_only=True)[0]
    x = fmap / fmap.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(torch.tensor(data["features"]["map"]["base"]), x.square().mean(1).sqrt(), rtol=1e-5, atol=1e-6)
    assert torch.tensor(data["features"]["spectrum"]["fdam"]).shape == (2, 4, 4)
    only_base = M.method_figures_data({"base": base}, images, num_images=1)
    assert only_base["applies"] == ["features"]
    json.dumps(data)


def test_plot_method_figures_names(fdam, images):
    from freqkit.analysis.methods.plots import plot_method_figures

    data = M.method_figures_data({"fdam": fdam}, images, num_images=2)
    figs = plot_method_figures(data)
    kinds = {k for k in M.METHOD_FIGURES if any(name.startswith(k) for name in figs)}
    assert kinds == set(data["applies"])
    spn = timm.create_model("spanet_small", num_classes=3, depths=(1, 1, 1, 1))
    figs = plot_method_figures(M.method_figures_data({"spanet": spn}, images[:1], num_images=1))
    assert "spam_filters_spanet.png" in figs and "features.png" in figs


def test_analyze_report_carries_the_method_figures_that_apply(tmp_path):
    """FDAM models get the AttInv / FreqScale figures in the report and its JSON; a plain ViT only the feature maps."""
    import timm

    import freqkit
    from freqkit.analysis import Report

    torch.manual_seed(0)
    fdam = timm.create_model("deit_tiny_fdam_patch16_224", img_size=32, depth=2, num_classes=0)
    plain = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rep = freqkit.analyze({"fdam": fdam, "vit": plain}, x, cka=False)
    assert {"attinv_modulation", "freqscale_gain", "features"} <= set(rep.methods["applies"])
    assert set(rep.methods["attinv_modulation"]) == {"fdam"} and rep.methods["features"]["models"] == ["fdam", "vit"]
    paths = rep.save(tmp_path)
    names = {p.name for p in paths["figures"]}
    assert "features.png" in names and any(n.startswith("attinv_modulation") for n in names)
    assert Report.from_json(tmp_path / "report.json").methods["applies"] == rep.methods["applies"]
    only_vit = freqkit.analyze({"vit": plain}, x, cka=False)
    assert only_vit.methods["applies"] == ["features"]
    assert freqkit.analyze({"vit": plain}, x, cka=False, methods=False).methods is None
