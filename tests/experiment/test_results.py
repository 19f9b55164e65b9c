"""Every result object follows one convention: to_dict, to_json(path=None), save and a loader, table, plot, _repr_html_."""

import json

import pytest
import torch

import freqkit
from freqkit.experiment import Run, Simulation, open_run
from freqkit.train import TrainConfig, TrainResult


def _inline_figures(html: str) -> int:
    return html.count("data:image/png;base64,")


def test_simulation_round_trips_and_renders(tmp_path):
    sim = freqkit.simulate(6, windows=[1, 3, None], stencils=["box3", "laplacian"])
    text = sim.to_json()
    assert isinstance(text, str) and json.loads(text) == sim.to_dict()
    assert Simulation.from_json(text).to_dict() == sim.to_dict()
    sim.save(tmp_path / "sim")
    again = Simulation.load(tmp_path / "sim")
    assert again.grid == sim.grid and again.curves == sim.curves
    assert sim.to_json(tmp_path / "c.json") == text and json.loads((tmp_path / "c.json").read_text()) == sim.to_dict()
    html = sim._repr_html_()
    assert _inline_figures(html) == len(sim.plot()) == 2 and "laplacian" in html


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    cfg = TrainConfig(
        model="vit_micro", data="shapes:size=32,train=8,val=4", steps=2, batch_size=4, log_every=1, out=str(out), progress=False
    )
    return freqkit.train(cfg)


def test_train_result_round_trips_through_its_run_folder(trained, tmp_path):
    d = json.loads(trained.to_json())
    assert d["metrics"] == trained.metrics and d["steps_done"] == 2 and d["config"]["model"] == "vit_micro"
    folder = trained.save(tmp_path / "copy")
    back = TrainResult.load(folder)
    assert back.metrics == trained.metrics and back.config == trained.config
    sa, sb = back.model.state_dict(), trained.model.state_dict()
    assert all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sb)
    assert [h["loss"] for h in back.history if h["split"] == "train"] == [
        h["loss"] for h in trained.history if h["split"] == "train"
    ]
    assert "miou" in trained.table() and _inline_figures(trained._repr_html_()) == 1


def test_run_round_trips_and_renders(trained, tmp_path):
    run = open_run(trained.out)
    assert json.loads(run.to_json())["metrics"] == trained.metrics
    copy = Run.load(run.save(tmp_path / "copy"))
    assert copy.metrics == run.metrics and copy.config == run.config and copy.history == run.history
    assert copy.timing == pytest.approx(run.timing, nan_ok=True)
    assert _inline_figures(run._repr_html_()) == 1 and "vit_micro" in run._repr_html_()
