"""Every size is bounded before the work it guards: one line naming the bound and how to raise it, never gigabytes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from freqkit.errors import FreqkitError


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _depth_of(obj) -> int:
    """Nesting depth of a parsed JSON value (the reference json_depth must agree with)."""
    if isinstance(obj, list):
        return 1 + max((_depth_of(v) for v in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_depth_of(v) for v in obj.values()), default=0)
    return 0


def _random_json(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, 2.5, None, True, 'a "quoted" [x]', "back\\slash {", "}]"])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[": _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_json_depth_matches_the_parsed_structure():
    from freqkit.limits import json_depth

    rng = random.Random(0)
    for _ in range(300):
        obj = _random_json(rng, rng.randint(0, 8))
        text = json.dumps(obj)
        assert json_depth(text) == _depth_of(obj), text


def test_a_deeply_nested_json_is_one_line_not_a_recursion_error():
    from freqkit.limits import loads_json

    text = _nested(100_000)
    with pytest.raises(
        FreqkitError, match=r"config.json nests 100000 levels deep, above freqkit's limit of 64; .*FREQKIT_MAX_JSON_DEPTH"
    ):
        loads_json(text, "config.json")


def test_the_limit_is_raised_on_purpose_with_its_variable(monkeypatch):
    from freqkit.limits import limit, loads_json

    assert loads_json(_nested(64), "x") is not None and limit("json_depth") == 64
    with pytest.raises(FreqkitError, match="limit of 64"):
        loads_json(_nested(65), "x")
    monkeypatch.setenv("FREQKIT_MAX_JSON_DEPTH", "100")
    assert loads_json(_nested(65), "x") is not None
    monkeypatch.setenv("FREQKIT_MAX_JSON_DEPTH", "10")
    with pytest.raises(FreqkitError, match="limit of 10"):
        loads_json(_nested(11), "x")
    monkeypatch.setenv("FREQKIT_MAX_JSON_DEPTH", "ten")
    with pytest.raises(FreqkitError, match=r"FREQKIT_MAX_JSON_DEPTH='ten' is not a positive integer"):
        limit("json_depth")


def _finished_run(tmp_path):
    from freqkit.train import train

    out = tmp_path / "run"
    train(model="vit_micro", data="shapes:size=32,train=8,val=4", steps=1, batch_size=2, out=str(out), progress=False)
    return out


@pytest.mark.parametrize("name", ["config.json", "metrics.json", "timing.json"])
def test_deep_json_in_a_run_folder_is_one_line(tmp_path, name):
    from freqkit.experiment.runs import open_run

    out = _finished_run(tmp_path)
    (out / name).write_text(_nested(50_000))
    with pytest.raises(FreqkitError) as err:
        open_run(out)
    text = str(err.value)
    assert "\n" not in text and "nests 50000 levels deep" in text and name in text
    if name == "metrics.json":  # named as what it is, not as 'the training config'
        assert "the metrics file" in text and "training config" not in text


def test_deep_checkpoint_state_is_damaged_not_a_recursion_error(tmp_path):
    from freqkit.train.checkpoint import CheckpointDamaged, find_checkpoint

    out = _finished_run(tmp_path)
    (out / "checkpoint" / "state.json").write_text(_nested(50_000))
    with pytest.raises(CheckpointDamaged, match=r"state.json is damaged .*nests 50000 levels deep") as err:
        find_checkpoint(out / "checkpoint")
    assert "\n" not in str(err.value)


def test_bins_past_the_limit_fail_before_any_work():
    from freqkit import analyze

    model = torch.nn.Conv2d(3, 4, 3)  # never runs: the bound is checked first
    with pytest.raises(FreqkitError, match=r"bins 1000000000 rings is above freqkit's limit of 4096; .*FREQKIT_MAX_BINS"):
        analyze(model, torch.zeros(1, 3, 8, 8), bins=10**9)


@pytest.mark.parametrize(
    "scales, message",
    [
        ("1000", r"eval_scales factor 1000 rescales images to fit 2048000x512000 = \d+ pixels, above freqkit's limit"),
        (",".join(["1.0"] * 17), r"eval_scales 17 scale factors is above freqkit's limit of 16"),
    ],
)
def test_eval_scales_are_bounded_before_training(tmp_path, scales, message):
    from freqkit.train import TrainConfig

    with pytest.raises(FreqkitError, match=message):
        TrainConfig(eval_mode="whole", eval_scales=scales, out=str(tmp_path / "x")).validate()
    assert TrainConfig(eval_mode="whole", eval_scales="0.5,1.0,1.75").validate()  # the paper's factors pass


def _thin_png(path, width: int = 1, height: int = 60000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def test_a_thin_image_is_refused_before_analyze_resizes_it(tmp_path):
    from freqkit import analyze

    _thin_png(tmp_path / "imgs" / "thin.png")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    # timm's evaluation resize (crop fraction 0.875) takes the 1-pixel side to 224 / 0.875 = 256 px: 256 x 15,360,000 pixels (11.8 GB as bytes)
    for headers in (True, False):
        with pytest.raises(
            FreqkitError,
            match=r"thin.png \(1x60000\) would be resized to 256x15360000 = \d+ pixels, above .*FREQKIT_MAX_RESIZED_PIXELS",
        ):
            analyze(model, str(tmp_path / "imgs"), img_size=224, check_headers=headers, methods=False)


def test_a_thin_validation_image_fails_the_pre_training_check(tmp_path):
    from freqkit.train import TrainConfig, preflight

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png"
                )
    _thin_png(tmp_path / "data" / "val" / "a" / "thin.png")
    cfg = TrainConfig(
        model="vit_micro",
        data=f"imagefolder:{tmp_path / 'data'}",
        img_size=32,
        steps=1,
        batch_size=2,
        out=str(tmp_path / "run"),
        progress=False,
    )
    with pytest.raises(FreqkitError, match=r"thin.png \(1x60000\) would be resized to"):
        preflight([cfg])
