"""docs/scripts/depth_study.py turns a comparison's results.json into the study's records, tables and figure."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "scripts" / "depth_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("depth_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(study) -> dict:
    """A comparison of the study's 12 models, 3 seeds: fdam at depth 12 is better than the baseline on every seed."""
    rng = np.random.default_rng(0)
    runs = {}
    for depth, base in study.BASES.items():
        for method in study.METHODS:
            name = base if method == "baseline" else f"{base}+{method}"
            lift = 0.1 if (depth == 12 and method == "fdam") else 0.0
            runs[name] = [
                {
                    "seed": seed,
                    "metrics": {"miou": 0.5 + lift + 0.01 * seed, "boundary_f1": 0.6 + 0.001 * seed, "pixel_acc": 0.9},
                    "hf_ratio": list(rng.random(depth)),
                    "cosine_similarity": list(rng.random(depth)),
                    "effective_rank": list(10 * rng.random(depth)),
                    "seconds": 1.0,
                }
                for seed in range(3)
            ]
    return {"settings": {"steps": 1}, "runs": runs}


def test_records_carry_depth_method_seed_and_the_last_block(study):
    results = _results(study)
    recs = study.records(results)
    assert len(recs) == 36 and {r["depth"] for r in recs} == {4, 8, 12}
    rec = next(r for r in recs if r["model"] == "vit_mini_d8+gfsa" and r["seed"] == 2)
    assert (rec["depth"], rec["method"]) == (8, "gfsa")
    assert rec["hf_ratio_last"] == results["runs"]["vit_mini_d8+gfsa"][2]["hf_ratio"][-1]
    assert len(rec["effective_rank_curve"]) == 8


def test_statistics_and_the_spread_rule(study):
    values = [0.3, 0.5, 0.9]
    mean, sd = study.mean_sd(values)
    assert mean == pytest.approx(statistics.mean(values)) and sd == pytest.approx(statistics.stdev(values))
    recs = study.records(_results(study))
    deep = study.versus_baseline(recs, 12, "fdam", "miou")
    assert deep["delta"] == pytest.approx(0.1) and deep["beyond_spread"]
    shallow = study.versus_baseline(recs, 4, "fdam", "miou")
    assert shallow["delta"] == pytest.approx(0.0, abs=1e-12) and not shallow["beyond_spread"]
    table = study.tables(recs)
    assert "**+10.00**" in table and table.count("**") == 4  # the legend and only depth 12's fdam mIoU is beyond the spread


def test_main_writes_json_tables_and_figure(study, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results(study)))
    assert study.main([str(tmp_path / "results.json"), "--out", str(tmp_path / "out")]) == 0
    payload = json.loads((tmp_path / "out" / "depth_study.json").read_text())
    assert all({"depth", "seed", "method"} <= set(r) for r in payload["records"])
    assert (tmp_path / "out" / "tables.md").read_text().startswith("Mean ± sample sd")
    assert (tmp_path / "out" / "depth_study.png").stat().st_size > 10_000
