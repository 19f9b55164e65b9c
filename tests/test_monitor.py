"""SpectralMonitor: records equal freqkit.analyze at each step, training is bitwise unchanged, history files, logging."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from freqkit.analysis import analyze
from freqkit.errors import FreqkitError, ParameterError
from freqkit.models.spec import build_model
from freqkit.monitor import METRICS, MonitorHistory, SpectralMonitor, load_history, over_training_figure, truncate_history

ANALYZE_METRICS = ("hf_ratio", "cosine_similarity", "effective_rank", "hf_log_amplitude", "rank_collapse_residual")


def _probe(n: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_matches_analyze(record: dict, model: nn.Module, probe: torch.Tensor, attention: bool = False) -> None:
    rep = analyze(model, probe, attention=attention, cka=False, methods=False).models[0]
    for key in ANALYZE_METRICS:
        if key in record:
            truth = rep.series(key)
            assert record[key] == pytest.approx(truth, rel=1e-5, abs=1e-6), key
    if attention:
        truth = [float(np.mean(layer.heads["entropy"])) for layer in rep.layers]
        assert record["attention_entropy"] == pytest.approx(truth, rel=1e-5)


class _ConvNet(nn.Module):
    """A small CNN with BatchNorm and dropout in its stages (what the monitor must not disturb)."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.3)),
            nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.2)),
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x).mean(dim=(-2, -1)))


def _train(monitor_every: int | None, steps: int = 6):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = _ConvNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = SpectralMonitor(model, _probe(2, 16), every=monitor_every) if monitor_every else None
    for step in range(1, steps + 1):
        x = torch.randn(4, 3, 16, 16)  # the data stream draws from the global RNG: the monitor must not shift it
        y = torch.randint(0, 3, (4,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mon is not None:
            grads = [p.grad.clone() for p in model.parameters()]
            assert mon.step(step) is not None or step % monitor_every
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, (torch.rand(3), np.random.rand(), random.random()), mon


def test_a_monitored_loop_ends_bitwise_equal():
    plain, rng_plain, _ = _train(None)
    watched, rng_watched, mon = _train(1)
    assert plain.keys() == watched.keys()
    for k in plain:  # weights, BatchNorm running statistics and num_batches_tracked
        assert torch.equal(plain[k], watched[k]), k
    assert torch.equal(rng_plain[0], rng_watched[0]) and rng_plain[1:] == rng_watched[1:]
    assert mon.history.steps == [1, 2, 3, 4, 5, 6]
    assert mon.history.kinds == ["map", "map"] and mon.history.labels == ["stage00", "stage01"]
    # the last record is what analyze reports for the final weights
    model = _ConvNet()
    model.load_state_dict(watched)
    _assert_matches_analyze(mon.history[-1], model, mon.probe)


def test_every_submodule_keeps_its_mode_and_rng_states_are_kept():
    model = _ConvNet().train()
    model.stages[1][1].eval()  # a frozen BatchNorm inside a training model
    modes = {n: m.training for n, m in model.named_modules()}
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    mon = SpectralMonitor(model, _probe(2, 16), every=1)
    mon.step(1)
    assert {n: m.training for n, m in model.named_modules()} == modes
    torch.manual_seed(5)
    expect = torch.rand(2)
    torch.manual_seed(5)
    mon.step(2)
    assert torch.equal(torch.rand(2), expect)


def test_records_equal_analyze_for_a_timm_vit_with_attention_and_every_metric():
    torch.manual_seed(0)
    model = build_model("vit_micro", "classification", 4, 32)
    probe = _probe()
    mon = SpectralMonitor(model, probe, every=5, metrics=list(METRICS))
    assert mon.step(3) is None  # not a multiple of every
    rec = mon.step(5)
    assert mon.step(5) is None  # measured once per step
    assert set(rec) == {"step", *METRICS} and rec["step"] == 5
    assert mon.history.layers == [f"blocks.{i}" for i in range(4)] and len(rec["hf_ratio"]) == 4
    _assert_matches_analyze(rec, model, probe, attention=True)
    # after a training step the numbers move, and still equal analyze of the new weights
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(probe).square().mean().backward()
    opt.step()
    rec2 = mon.step(10)
    assert rec2["hf_ratio"] != rec["hf_ratio"]
    _assert_matches_analyze(rec2, model, probe, attention=True)


def test_freqkit_backbones_and_wrappers():
    # a SPANet (stages of feature maps) and a FDAM ViT; torch.compile and DataParallel-style wrappers are unwrapped
    torch.manual_seed(0)
    import timm

    probe = _probe(2, 64)
    for name in ("spanet_small", "spanetv2_s18_pure"):
        net = timm.create_model(name, num_classes=3)
        rec = SpectralMonitor(net, probe).measure(0)
        assert len(rec["hf_ratio"]) == 4
        _assert_matches_analyze(rec, net, probe)
    fdam = build_model("vit_micro+fdam", "classification", 4, 32)
    compiled = torch.compile(fdam, backend="eager")
    mon = SpectralMonitor(compiled, _probe(), every=1)
    assert mon.net is fdam
    _assert_matches_analyze(mon.measure(1), fdam, _probe())


class _Lit(nn.Module):
    """A training wrapper holding the backbone (as a LightningModule does): the monitor finds the backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = nn.CrossEntropyLoss()
        self.model = build_model("vit_micro", "classification", 4, 32)


def test_a_wrapper_module_is_searched_for_its_backbone():
    lit = _Lit()
    mon = SpectralMonitor(lit, _probe(), every=1)
    assert mon.net is lit.model
    _assert_matches_analyze(mon.measure(0), lit.model, _probe())


def test_transformers_vit():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    model = transformers.ViTForImageClassification(cfg)
    mon = SpectralMonitor(model, _probe(), metrics=("hf_ratio", "effective_rank", "attention_entropy"))
    rec = mon.measure(0)
    assert len(rec["hf_ratio"]) == 2
    _assert_matches_analyze(rec, model, _probe(), attention=True)
    assert model.training  # the mode the model came in


def test_ddp_wrapped_model_and_other_ranks(tmp_path, monkeypatch):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = build_model("vit_micro", "classification", 4, 32)
        mon = SpectralMonitor(DDP(net), _probe(), every=1, path=tmp_path / "m.jsonl")
        assert mon.net is net
        _assert_matches_analyze(mon.step(1), net, _probe())
        # any rank but 0 does nothing: no measurement, no file, no collective call that could wait for rank 0
        monkeypatch.setattr("freqkit.monitor._rank", lambda: 1)
        other = SpectralMonitor(DDP(net), _probe(), every=1, path=tmp_path / "other.jsonl")
        assert other.step(1) is None and not (tmp_path / "other.jsonl").exists() and len(other.history) == 0
    finally:
        dist.destroy_process_group()


class _Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.figures: list[tuple[str, int]] = []

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.append((tag, value, global_step))

    def add_figure(self, tag, figure, global_step=None):
        self.figures.append((tag, global_step))


def test_writer_gets_one_scalar_per_layer_and_metric_and_figures():
    w = _Writer()
    model = build_model("vit_micro", "classification", 4, 32)
    mon = SpectralMonitor(model, _probe(), every=2, writer=w, figure_every=2)
    for step in range(9):
        mon.step(step)
    assert mon.history.steps == [0, 2, 4, 6, 8]
    assert len(w.scalars) == 5 * 3 * 4
    tags = {t for t, _, _ in w.scalars}
    assert "spectral/hf_ratio/block03" in tags and "spectral/effective_rank/block00" in tags
    last = {t: v for t, v, s in w.scalars if s == 8}
    assert last["spectral/cosine_similarity/block02"] == mon.history[-1]["cosine_similarity"][2]
    assert w.figures == [("spectral/by_layer", 0), ("spectral/by_layer", 4), ("spectral/by_layer", 8)]


def test_history_file_json_and_plots(tmp_path):
    path = tmp_path / "run" / "monitor.jsonl"
    path.parent.mkdir()
    model = build_model("vit_micro", "classification", 4, 32)
    mon = SpectralMonitor(model, _probe(), every=1, path=path)
    for step in (0, 1, 2):
        mon.step(step)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["layers"] == mon.history.layers
    loaded = load_history(path)
    assert loaded.records == mon.history.records and loaded.layers == mon.history.layers
    assert SpectralMonitor.load_history(path).steps == [0, 1, 2]
    # one JSON document: to_json as a string and as a file
    text = mon.to_json()
    assert MonitorHistory.from_dict(json.loads(text)).records == mon.history.records
    mon.to_json(tmp_path / "h.json")
    assert load_history(tmp_path / "h.json").to_dict() == mon.to_dict()
    figs = mon.plot()
    assert set(figs) == {"by_layer", "by_step"}
    by_layer, by_step = figs["by_layer"].axes[0], figs["by_step"].axes[0]
    assert len(by_layer.lines) == 3 and list(by_layer.lines[0].get_xdata()) == [1, 2, 3, 4]  # one line per record
    assert len(by_step.lines) == 4 and list(by_step.lines[0].get_ydata()) == [r["hf_ratio"][0] for r in mon.history]
    html = mon._repr_html_()
    assert html.count("data:image/png;base64,") == 2 and "vit_tiny" in html


def test_torn_lines_reruns_and_truncation_leave_no_duplicates(tmp_path):
    path = tmp_path / "monitor.jsonl"
    model = build_model("vit_micro", "classification", 4, 32)
    mon = SpectralMonitor(model, _probe(), every=10, path=path)
    for step in (0, 10, 20, 30):
        mon.step(step)
    with open(path, "a") as fh:
        fh.write('{"step": 40, "hf_ra')  # a kill mid-line
    assert load_history(path).steps == [0, 10, 20, 30]
    truncate_history(path, 25)  # resumed from the checkpoint of step 25
    assert load_history(path).steps == [0, 10, 20]
    # a new monitor on the file continues it; a record at an old step replaces that step and what came after
    again = SpectralMonitor(model, _probe(), every=10, path=path)
    assert again.history.steps == [0, 10, 20]
    again.step(30)
    again.step(10)
    assert load_history(path).steps == [0, 10]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 3
    with pytest.raises(ParameterError, match="path"):
        SpectralMonitor(model, _probe(), metrics=("hf_ratio",), path=path)


def test_bad_input_names_the_parameter(tmp_path):
    model = build_model("vit_micro", "classification", 4, 32)
    with pytest.raises(ParameterError, match="every"):
        SpectralMonitor(model, _probe(), every=0)
    with pytest.raises(ParameterError, match="metrics.*hf_ratio"):
        SpectralMonitor(model, _probe(), metrics=("smoothness",))
    with pytest.raises(ParameterError, match="probe.*batch dimension"):
        SpectralMonitor(model, _probe()[0])
    with pytest.raises(ParameterError, match="writer"):
        SpectralMonitor(model, _probe(), writer=object())
    with pytest.raises(ParameterError, match="model"):
        SpectralMonitor("vit_micro", _probe())
    with pytest.raises(FreqkitError, match="no header"):
        (tmp_path / "x.jsonl").write_text("garbage\n")
        load_history(tmp_path / "x.jsonl")


def test_over_training_figure_averages_seeds():
    def curves(offset: float) -> dict:
        return {
            "steps": [0, 10],
            "layers": ["block00", "block01"],
            "hf_ratio": [[0.1 + offset, 0.2], [0.3, 0.4 + offset]],
            "cosine_similarity": [[0.5, 0.5], [0.6, 0.7]],
        }

    runs = {"a": [{"monitor": curves(0.0)}, {"monitor": curves(0.2)}], "b": [{"monitor": None}, {"monitor": curves(0.0)}]}
    fig = over_training_figure(runs)
    axes = fig.axes
    assert len(axes) == 4  # 2 models x (hf_ratio, similarity)
    a_hf = axes[0].lines
    assert list(a_hf[0].get_ydata()) == pytest.approx([0.2, 0.3]) and list(a_hf[1].get_ydata()) == pytest.approx([0.2, 0.5])
    assert list(a_hf[0].get_xdata()) == [0, 10]
    assert over_training_figure({"a": [{"monitor": None}]}) is None
