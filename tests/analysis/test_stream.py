"""Streaming analyze: every data source gives the statistics of one tensor pass; resume; CKA, per-head
maps and receptive fields against the spectral / probe functions and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from freqkit import spectral as S
from freqkit.analysis import analyze
from freqkit.analysis.stream import image_folder, list_images
from freqkit.errors import FreqkitError
from freqkit.probe import capture, effective_receptive_field


def _vit(depth: int = 2, name: str = "deit_tiny_patch16_224") -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _flat(report) -> dict[str, list[float]]:
    out = {}
    for m in report.models:
        for layer in m.layers:
            for key in ("hf_ratio", "effective_rank", "cosine_similarity", "rank_collapse_residual"):
                out[f"{m.name}.{layer.name}.{key}"] = [getattr(layer, key)]
            out[f"{m.name}.{layer.name}.spectrum"] = [v for row in layer.spectrum for v in row]
            out[f"{m.name}.{layer.name}.rla"] = list(layer.relative_log_amplitude)
            if layer.heads:
                for k, v in layer.heads.items():
                    out[f"{m.name}.{layer.name}.heads.{k}"] = list(v)
                out[f"{m.name}.{layer.name}.global"] = list(layer.global_response)
                out[f"{m.name}.{layer.name}.local"] = list(layer.local_response["mean"]) + list(layer.local_response["std"])
            if layer.erf:
                out[f"{m.name}.{layer.name}.erf"] = [v for row in layer.erf["map"] for v in row]
        if m.cka is not None:
            out[f"{m.name}.cka"] = [v for row in m.cka for v in row]
        if m.cross_layer_similarity is not None:
            out[f"{m.name}.cross"] = [v for row in m.cross_layer_similarity for v in row]
    for p in report.model_cka:
        out[f"{p['a']}|{p['b']}"] = [v for row in p["matrix"] for v in row]
    return out


def _assert_same(a, b, rtol=1e-5):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for key, xs in fa.items():
        ys = fb[key]
        scale = max(abs(v) for v in xs) or 1.0
        assert len(xs) == len(ys)
        assert all(math.isclose(x, y, rel_tol=rtol, abs_tol=rtol * scale) for x, y in zip(xs, ys)), key


class _Pairs(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 3


def test_every_source_equals_the_tensor(images):
    model = _vit()
    kw = dict(attention=True, erf=True, bins=8)
    whole = analyze(model, images, **kw)
    assert whole.settings["num_images"] == 7 and whole.models[0].cka is not None
    _assert_same(whole, analyze(model, DataLoader(TensorDataset(images), batch_size=3), **kw))
    _assert_same(whole, analyze(model, _Pairs(images), batch_size=2, **kw))
    _assert_same(whole, analyze(model, (images[i : i + 4] for i in range(0, 7, 4)), **kw))
    limited = analyze(model, _Pairs(images), max_images=4, batch_size=3, **kw)
    assert limited.settings["num_images"] == 4
    _assert_same(limited, analyze(model, images[:4], **kw))


class _Failing(_Pairs):
    """Items from ``fail_at`` on raise (an interruption); items before ``junk_below`` are junk."""

    def __init__(self, x, fail_at=None, junk_below=0):
        super().__init__(x)
        self.fail_at, self.junk_below = fail_at, junk_below

    def __getitem__(self, i):
        if self.fail_at is not None and i >= self.fail_at:
            raise KeyboardInterrupt
        return (torch.zeros_like(self.x[i]) if i < self.junk_below else self.x[i]), 0


def test_resume_after_an_interruption_equals_one_run(images, tmp_path):
    model = _vit()
    full = analyze(model, images, batch_size=2, attention=True)

    def stream(junk: int = 0, stop: int = 99):
        for k, s in enumerate(range(0, 7, 2)):
            if k == stop:
                raise KeyboardInterrupt
            yield torch.zeros_like(images[s : s + 2]) if k < junk else images[s : s + 2]

    with pytest.raises(KeyboardInterrupt):
        analyze(model, stream(stop=3), attention=True, state_dir=tmp_path, save_every=1)
    # the first 3 batches are junk now: a resumed run must skip them, not analyse them again
    resumed = analyze(model, stream(junk=3), attention=True, state_dir=tmp_path, resume=True)
    assert resumed.settings["num_images"] == 7
    _assert_same(full, resumed)
    # an indexable source skips the images it has done without reading them
    with pytest.raises(KeyboardInterrupt):
        analyze(model, _Failing(images, fail_at=4), batch_size=2, attention=True, state_dir=tmp_path / "ds", save_every=1)
    again = analyze(model, _Failing(images, junk_below=4), batch_size=2, attention=True, state_dir=tmp_path / "ds", resume=True)
    _assert_same(full, again)
    with pytest.raises(FreqkitError, match="different run"):
        analyze(model, _Failing(images), batch_size=2, cutoff=0.3, attention=True, state_dir=tmp_path / "ds", resume=True)
    with pytest.raises(FreqkitError, match="state_dir"):
        analyze(model, images, resume=True)


def test_cka_and_heads_match_spectral_functions(images):
    model = _vit(depth=3)
    rep = analyze([model, model], images, attention=True, bins=8, batch_size=3)
    cap = capture(model, images, attention=True)
    feats = [layer.spatial_tokens() for layer in cap.layers]  # (images, tokens, C): one mini-batch per image
    expect = S.minibatch_cka(feats)
    got = torch.tensor(rep.models[0].cka, dtype=torch.float64)
    torch.testing.assert_close(got, expect.double(), rtol=1e-4, atol=1e-5)
    # a model against itself: the model-by-model matrix is its own layer-by-layer matrix
    pair = rep.model_cka[0]
    assert (pair["a"], pair["b"]) == (rep.names[0], rep.names[1])
    torch.testing.assert_close(torch.tensor(pair["matrix"], dtype=torch.float64), got, rtol=1e-6, atol=1e-9)
    for stats, layer in zip(rep.models[0].layers, cap.layers):
        a = layer.attn
        heads = stats.heads
        assert heads["entropy"] == pytest.approx(S.attention_entropy(a).mean(0).tolist(), rel=1e-5)
        assert heads["distance"] == pytest.approx(S.attention_distance(a, (4, 4), 1).mean(0).tolist(), rel=1e-5)
        assert heads["hf_share"] == pytest.approx(S.local_response_hf_share(a, (4, 4), 1).mean(0).tolist(), rel=1e-5)
        assert heads["effective_rank"] == pytest.approx(S.effective_rank(a.flatten(0, 1)).view(7, 2).mean(0).tolist(), rel=1e-5)
        assert 0 < min(heads["entropy"]) and max(heads["entropy"]) <= math.log(17) + 1e-6


class _OneConv(nn.Module):
    """One 3x3 convolution with all-ones weights as the only stage."""

    def __init__(self, out_channels: int = 4) -> None:
        super().__init__()
        conv = nn.Conv2d(3, out_channels, 3, padding=1, bias=False)
        nn.init.ones_(conv.weight)
        self.stages = nn.Sequential(conv)

    def forward(self, x):
        return self.stages(x)


def test_effective_receptive_field_closed_form():
    """d(sum_c y_c(centre)) / dx(k, p) = out_channels for p in the 3x3 window, 0 elsewhere; summed over k = 3 channels."""
    x = torch.randn(2, 3, 9, 8)
    erf = effective_receptive_field(_OneConv(4), x)["stages.0"]
    expect = torch.zeros(9, 8)
    expect[3:6, 3:6] = 3 * 4
    torch.testing.assert_close(erf, expect)
    rep = analyze(_OneConv(4), x, erf=True, bins=4)
    stored = rep.models[0].layers[0].erf
    assert stored["image_size"] == [9, 8]
    torch.testing.assert_close(torch.tensor(stored["map"], dtype=torch.float64), expect.double(), rtol=0, atol=1e-9)
    assert stored["radial_spectrum"] == pytest.approx(S.radial_profile(S.spectrum(expect.double()[None, None]), 4).tolist())


def test_folder_layouts_and_timm_data_config(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    layout = [
        "imagenet/val/n01/a.JPEG",
        "imagenet/val/n02/b.jpg",
        "ade/images/validation/c.jpg",
        "ade/annotations/validation/c.png",
    ]
    for rel in layout:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(
            path, format="JPEG" if rel.lower().endswith(("jpg", "jpeg")) else "PNG"
        )
    assert [p.name for p in list_images(tmp_path)] == ["c.jpg", "a.JPEG", "b.jpg"]  # label maps under annotations/ skipped
    model = timm.create_model("deit_tiny_patch16_224")
    ds = image_folder(tmp_path / "imagenet", model)
    x = ds[0]
    assert x.shape == (3, 224, 224)
    # the model's mean / std: the normalised image has the mean of the model's data config removed
    cfg = timm.data.resolve_data_config({}, model=model)
    raw = ds.transform.transforms[:-1]  # everything before Normalize
    from torchvision.transforms import Compose

    plain = Compose(raw)(Image.open(ds.paths[0]).convert("RGB"))
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    torch.testing.assert_close(x, (plain - mean) / std)
    assert image_folder(tmp_path / "imagenet", model, img_size=48)[0].shape == (3, 48, 48)


def test_bad_sources():
    model = _vit(depth=1)
    with pytest.raises(FreqkitError, match="cannot read images from a int"):
        analyze(model, 3)
    with pytest.raises(FreqkitError, match="max_images"):
        analyze(model, torch.randn(2, 3, 32, 32), max_images=0)
    with pytest.raises(FreqkitError, match=r"\(B, 3, H, W\)"):
        analyze(model, [torch.randn(3, 32, 32)])
    with pytest.raises(FreqkitError, match="no images"):
        analyze(model, iter([]))
