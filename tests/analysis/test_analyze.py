"""freqkit.analyze -> Report: values, batch invariance, closed forms, JSON / PNG / HTML export."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys

import pytest
import timm
import torch
from torch import nn

import freqkit
from freqkit import spectral as S
from freqkit.analysis import Report, analyze
from freqkit.errors import FreqkitError, ParameterError
from freqkit.probe import capture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _vit(name: str = "deit_tiny_patch16_224", depth: int = 3, **kw) -> nn.Module:
    return timm.create_model(name, img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2, **kw).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 3, 32, 32, generator=g)


@pytest.fixture(scope="module")
def report(images) -> Report:
    torch.manual_seed(0)
    models = {"deit": _vit(), "distilled": _vit("deit_tiny_distilled_patch16_224")}
    return analyze(models, images, attention=True, batch_size=2, bins=8)


def test_values_match_spectral_functions_on_the_capture(images):
    model = _vit()
    rep = analyze(model, images, attention=True, bins=8)
    cap = capture(model, images, attention=True)
    m = rep.models[0]
    assert m.name == "deit_tiny_patch16_224" and len(m.layers) == 3
    for stats, layer in zip(m.layers, cap.layers):
        x = layer.spatial_map()
        t = layer.spatial_tokens()
        assert stats.grid_size == (4, 4) and stats.channels == 32 and stats.num_prefix_tokens == 1
        assert stats.hf_ratio == pytest.approx(float(S.high_frequency_ratio(x).mean()), rel=1e-5)
        assert stats.effective_rank == pytest.approx(float(S.effective_rank(t).mean()), rel=1e-5)
        assert stats.cosine_similarity == pytest.approx(float(S.token_cosine_similarity(t).mean()), rel=1e-5)
        assert stats.rank_collapse_residual == pytest.approx(float(S.rank_collapse_residual(t).mean()), rel=1e-5)
        assert stats.relative_log_amplitude == pytest.approx(S.relative_log_amplitude(x).tolist(), abs=1e-5)
        assert stats.hf_log_amplitude == pytest.approx(stats.relative_log_amplitude[-1])
        assert stats.radial_profile == pytest.approx(S.radial_profile(S.spectrum(x), 8).tolist(), abs=1e-5)
        summ = S.local_response_summary(layer.attn, (4, 4), 1, bins=8)
        assert stats.local_response["mean"] == pytest.approx(summ["mean"].mean(0).tolist(), abs=1e-5)
        glob = S.radial_profile(S.global_response(layer.v_map(), layer.attn_out_map()), 8).mean(0)
        assert stats.global_response == pytest.approx(glob.tolist(), abs=1e-5)
    cross = S.cross_layer_similarity([l.spatial_tokens() for l in cap.layers])
    torch.testing.assert_close(torch.tensor(m.cross_layer_similarity, dtype=torch.float64), cross.double(), rtol=0, atol=1e-6)


def test_batch_size_does_not_change_the_numbers(images):
    model = _vit(depth=2)
    whole = analyze(model, images, attention=True, bins=8).models[0]
    split = analyze(model, images, attention=True, bins=8, batch_size=2).models[0]
    for a, b in zip(whole.layers, split.layers):
        assert a.hf_ratio == pytest.approx(b.hf_ratio, rel=1e-5)
        assert a.effective_rank == pytest.approx(b.effective_rank, rel=1e-5)
        assert a.relative_log_amplitude == pytest.approx(b.relative_log_amplitude, abs=1e-5)
        assert [r for row in a.spectrum for r in row] == pytest.approx([r for row in b.spectrum for r in row], abs=1e-5)
        assert a.global_response == pytest.approx(b.global_response, abs=1e-5)
        assert a.local_response["dc"] == pytest.approx(b.local_response["dc"], abs=1e-6)
    torch.testing.assert_close(
        torch.tensor(whole.cross_layer_similarity), torch.tensor(split.cross_layer_similarity), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("threads, hsic_bytes", [(2, 1), (3, 1 << 30)])
def test_layer_threads_and_hsic_chunks_do_not_change_the_numbers(images, monkeypatch, threads, hsic_bytes):
    """add_batch runs the layers side by side on torch's threads and the HSIC over chunks of images bounded
    in bytes: several threads with one image per HSIC call, or one call for all, give the numbers of a
    1-thread run."""
    from freqkit.analysis import batch_stats

    model = _vit(depth=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = analyze(model, images, bins=8).models[0]
        torch.set_num_threads(threads)
        monkeypatch.setattr(batch_stats, "_HSIC_BYTES", hsic_bytes)
        split = analyze(model, images, bins=8).models[0]
        assert torch.get_num_threads() == threads  # the layer pool restores the thread count
    finally:
        torch.set_num_threads(before)
    for a, b in zip(whole.layers, split.layers):
        for key in ("hf_ratio", "effective_rank", "cosine_similarity", "rank_collapse_residual"):
            assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-6), key
        assert b.relative_log_amplitude == pytest.approx(a.relative_log_amplitude, rel=1e-6, abs=1e-12)
        assert [r for row in b.spectrum for r in row] == pytest.approx([r for row in a.spectrum for r in row], rel=1e-6)
    torch.testing.assert_close(torch.tensor(split.cka), torch.tensor(whole.cka), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.tensor(split.cross_layer_similarity), torch.tensor(whole.cross_layer_similarity))


def test_uniform_attention_closed_form(images):
    """q = k = 0 makes every attention row uniform over the N = 1 + 16 keys: the local response is
    HW / N at DC and 0 elsewhere with no spread, and A V is spatially constant, so the global response
    vanishes away from DC (FDAM supplementary, Sec. B)."""
    model = _vit(depth=2)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight[:64].zero_()
            blk.attn.qkv.bias[:64].zero_()
    rep = analyze(model, images, attention=True, bins=4)
    for layer in rep.models[0].layers:
        lr = layer.local_response
        assert lr["dc"] == pytest.approx(16 / 17, abs=1e-6)
        assert lr["mean"][0] == pytest.approx(math.log1p(16 / 17), abs=1e-6)
        assert lr["mean"][2:] == pytest.approx([0.0, 0.0], abs=1e-6)
        assert max(lr["std"]) == pytest.approx(0.0, abs=1e-6)
        assert layer.global_response[2:] == pytest.approx([0.0, 0.0], abs=1e-3)


def test_mode_restored_and_output_untouched(images):
    model = _vit(depth=1).train()
    rep = analyze([model, model], images[:2])
    assert model.training
    assert rep.names == ["deit_tiny_patch16_224", "deit_tiny_patch16_224-2"]
    assert rep.settings["models"] == rep.names and rep.models[0].info["num_images"] == 2


def test_conv_model_has_no_cross_layer_matrix(images, tmp_path):
    rep = analyze(timm.create_model("resnet18"), images[:2])
    m = rep.models[0]
    assert m.cross_layer_similarity is None and [l.kind for l in m.layers] == ["map"] * 4
    assert [l.grid_size for l in m.layers] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    names = [p.name for p in rep.plot(tmp_path)]
    assert "cross_layer_similarity.png" not in names and "responses.png" not in names


def test_json_round_trip(report, tmp_path):
    path = report.to_json(tmp_path / "r.json")
    raw = json.loads(path.read_text())
    assert raw["schema"] == "freqkit.report" and raw["schema_version"] == 2
    for key in ("cutoff", "bins", "image_size", "models", "attention", "batch_size"):
        assert key in raw["settings"]
    back = Report.from_json(path)
    assert back == report
    raw["schema_version"] = 99
    (tmp_path / "new.json").write_text(json.dumps(raw))
    with pytest.raises(FreqkitError, match="upgrade freqkit"):
        Report.from_json(tmp_path / "new.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(FreqkitError, match="not a freqkit report"):
        Report.from_json(tmp_path / "other.json")


def test_result_object_convention(report, tmp_path):
    """to_dict / to_json text / save + load / from_json text / table / plot / inline HTML all describe the same report."""
    text = report.to_json()
    assert isinstance(text, str) and json.loads(text) == json.loads(json.dumps(report.to_dict()))
    assert Report.from_json(text) == report
    assert not list(tmp_path.iterdir())  # no path: nothing written
    saved = report.save(tmp_path / "out", figures=False)
    assert saved["json"] == tmp_path / "out" / "report.json" and saved["html"] is None
    assert Report.load(tmp_path / "out") == report and Report.load(saved["json"]) == report
    assert json.loads(saved["json"].read_text()) == json.loads(text)
    for name in report.names:
        assert name in report.table()
    with pytest.raises(FreqkitError, match="does not exist"):
        Report.load(tmp_path / "missing")
    with pytest.raises(FreqkitError, match="not valid JSON"):
        Report.from_json("{oops")


def test_repr_html_inlines_every_figure(report):
    """Jupyter's rich display: the page body with one base64 PNG per figure and every layer's row, no document shell."""
    from freqkit.analysis.plots import figures

    html = report._repr_html_()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) == len(figures(report))
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in imgs)
    assert "<html" not in html and "<td>blocks.2</td>" in html


def test_names_build_the_same_random_weights_without_touching_the_callers_rng(images, tmp_path):
    """A name builds a seeded random-init model (same report on every call and process); the caller's RNG state is kept."""
    before = torch.random.get_rng_state()
    a = analyze("deit_tiny_patch16_224", images[:2], img_size=32, cka=False, methods=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(123)  # a different global state must not change what the name builds
    b = analyze(["deit_tiny_patch16_224"], images[:2], img_size=32, cka=False, methods=False)
    assert a.models == b.models
    assert a.models[0].info["weights"].startswith("random init") and a.settings["weights"] == {
        "deit_tiny_patch16_224": a.models[0].info["weights"]
    }
    ref = timm.create_model("deit_tiny_patch16_224", img_size=32)
    torch.nn.init.constant_(ref.head.bias, 0.5)
    from safetensors.torch import save_file

    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    c = analyze(
        {"mine": "deit_tiny_patch16_224"},
        images[:2],
        img_size=32,
        checkpoint={"mine": tmp_path / "w.safetensors"},
        cka=False,
        methods=False,
    )
    d = analyze(ref.eval(), images[:2], cka=False, methods=False)
    assert c.models[0].layers == d.models[0].layers and c.models[0].info["weights"] == f"checkpoint {tmp_path / 'w.safetensors'}"
    with pytest.raises(ParameterError, match="lists 1 files for 2 models"):
        analyze(["deit_tiny_patch16_224", "resnet18"], images[:1], checkpoint=[tmp_path / "w.safetensors"])


def test_device_moves_models_and_is_recorded(images):
    model = _vit(depth=1)
    rep = analyze(model, images[:1], device="cpu", cka=False, methods=False)
    assert rep.settings["device"] == "cpu" and "weights" not in rep.settings
    with pytest.raises(ParameterError, match="^device "):
        analyze(model, images[:1], device="tpu")


def test_merge_and_table(report, images):
    other = analyze(_vit(depth=2), images[:2], bins=8)
    merged = Report.merge(report, other)
    assert merged.names == ["deit", "distilled", "deit_tiny_patch16_224"]
    assert Report.merge(report, report).names == ["deit", "distilled", "deit-2", "distilled-2"]
    with pytest.raises(FreqkitError, match="bins"):
        Report.merge(report, analyze(_vit(depth=1), images[:1], bins=4))
    text = merged.table()
    for name in merged.names:
        assert name in text
    assert text.count("blocks.2") == 2 and "local DC" in text
    row = next(line for line in text.splitlines() if line.startswith("blocks.0"))
    assert f"{report['deit'].layers[0].hf_ratio:.4g}" in row


def test_plots_and_html(report, tmp_path):
    paths = report.plot(tmp_path / "figs")
    names = [p.name for p in paths]
    assert names == [
        "layer_metrics.png",
        "cross_layer_similarity.png",
        "cka.png",
        "spectra_deit.png",
        "spectra_distilled.png",
        "spectral_curves.png",
        "responses.png",
        "heads_deit.png",
        "heads_distilled.png",
        "features.png",  # plain ViTs: of the method figures only the feature maps apply
    ]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    html_path = report.to_html(tmp_path / "report.html")
    html = html_path.read_text()
    srcs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert len(srcs) == len(paths) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html and "<link" not in html and "url(" not in html
    for layer in report["distilled"].layers:
        assert f"<td>{layer.name}</td>" in html
    saved = report.save(tmp_path / "out")
    assert saved["json"].is_file() and saved["html"].is_file() and len(saved["figures"]) == len(paths)


def test_bad_input():
    model = _vit(depth=1)
    with pytest.raises(FreqkitError, match=r"\(B, 3, H, W\)"):
        analyze(model, torch.randn(3, 32, 32))
    with pytest.raises(FreqkitError, match="not a torch.nn.Module"):
        analyze({"a": 3}, torch.randn(1, 3, 32, 32))
    with pytest.raises(FreqkitError, match="unknown model 'deit'"):
        analyze({"a": "deit"}, torch.randn(1, 3, 32, 32))
    with pytest.raises(FreqkitError, match="cutoff"):
        analyze(model, torch.randn(1, 3, 32, 32), cutoff=3.0)


def test_import_is_light():
    code = "import sys, freqkit.analysis, freqkit.probe; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert freqkit.analyze is analyze and freqkit.Report is Report
