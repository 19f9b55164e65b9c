"""Recipes (--recipe, --print-config, flag overrides), the lr schedule, --init key reporting, end to end on tiny ADE20K.

Each recipe's settings against the release: test_recipe_fidelity.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from freqkit.cli import main
from freqkit.train.optim import lr_factor
from freqkit.train.recipes import RECIPES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from ddp_launch import freqkit_torchrun, torchrun_env
from test_transforms import SIZES, make_ade  # noqa: E402


def _print_config(capsys, *argv) -> dict:
    assert main(["train", *argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_flags_override_the_recipe_and_batch_follows_world_size(capsys, monkeypatch):
    cfg = _print_config(
        capsys,
        "--recipe",
        "upernet_deit_small_ade20k_160k",
        "--lr",
        "0.001",
        "--no-eval-flip",
        "--crop-size",
        "256",
        "--schedule",
        "cosine",
    )
    assert cfg["lr"] == 0.001 and cfg["crop_size"] == 256 and cfg["schedule"] == "cosine" and cfg["weight_decay"] == 0.01
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = _print_config(capsys, "--recipe", "upernet_deit_small_ade20k_160k")
    assert cfg["batch_size"] == 4 and cfg["global_batch_size"] == 16
    cfg = _print_config(capsys, "--recipe", "upernet_deit_small_ade20k_160k", "--batch-size", "2")
    assert cfg["global_batch"] is None and cfg["batch_size"] == 2 and cfg["global_batch_size"] == 8
    # without a recipe the plain defaults hold
    assert _print_config(capsys)["lr"] == 1e-3
    assert main(["train", "--recipe", "nope", "--print-config"]) == 2
    assert "--recipe 'nope' is unknown" in capsys.readouterr().err


def test_prefix_schedule_warmup_from_1e6_then_poly_over_the_rest():
    f = lambda s: lr_factor(s, 160_000, 1500, "poly", 0.0, warmup_start=1e-6)  # noqa: E731
    assert f(0) == pytest.approx(1e-6)
    assert f(750) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert f(1500) == pytest.approx(1.0)
    assert f(1500 + 158_500 // 2) == pytest.approx(0.5, rel=1e-6)
    assert f(160_000) == 0.0


def test_init_reports_keys_and_tiny_protocol_run_end_to_end(tmp_path, capsys):
    import timm

    root = make_ade(tmp_path / "ade")
    # a timm ViT classifier of the vit_micro shape at another resolution: pos_embed is resampled, head / norm unexpected
    src = timm.create_model(
        "vit_tiny_patch16_224", embed_dim=32, depth=4, num_heads=2, patch_size=8, mlp_ratio=2.0, img_size=64, num_classes=7
    )
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "vit_micro+fdam",
                "--data",
                f"ade20k:{root}",
                "--crop-size",
                "32",
                "--img-scale",
                "128,32",
                "--steps",
                "2",
                "--global-batch",
                "2",
                "--head-norm",
                "batch",
                "--aux-channels",
                "8",
                "--head-channels",
                "16",
                "--init",
                str(tmp_path / "w.pth"),
                "--out",
                str(out),
                "--no-progress",
                "--lr",
                "1e-4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "missing (" in text and "filter" in text and "unexpected (4): head.bias, head.weight, norm.bias, norm.weight" in text
    saved = json.loads((out / "config.json").read_text())
    assert saved["crop_size"] == 32 and saved["aux_channels"] == 8 and saved["batch_size"] == 2
    from freqkit.models.checkpoint import load_state_dict_file

    weights = load_state_dict_file(out / "model.safetensors")
    assert "aux_head.classifier.weight" in weights  # the auxiliary head was trained and saved
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "eval",
                str(out),
                "--data",
                f"ade20k:{root}",
                "--save-predictions",
                str(pred),
                "--eval-mode",
                "slide",
                "--no-progress",
            ]
        )
        == 0
    )
    for i, (w, h) in enumerate(SIZES):
        im = np.array(Image.open(pred / f"ADE_{i:03d}.png"))
        assert im.shape == (h, w) and im.min() >= 1


def test_init_without_shared_tensors_fails(tmp_path):
    from freqkit.errors import FreqkitError
    from freqkit.models.spec import build_model, init_backbone

    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(FreqkitError, match="no tensor"):
        init_backbone(build_model("vit_micro", "segmentation", 3, 32), str(tmp_path / "bad.pth"))


def test_aux_head_under_two_gloo_processes_matches_one_process(tmp_path):
    """DDP with the auxiliary head (every parameter used each step) and global_batch split over 2 processes."""
    import subprocess

    from safetensors.torch import load_file

    from freqkit.train import TrainConfig, train

    data = "shapes:size=32,train=8,val=4"
    common = dict(model="vit_micro+fdam", data=data, steps=2, lr=3e-3, seed=0, progress=False, aux_channels=8, global_batch=4)
    train(TrainConfig(out=str(tmp_path / "one"), **common))
    cmd = [
        *freqkit_torchrun(),
        "train",
        "--model",
        "vit_micro+fdam",
        "--data",
        data,
        "--steps",
        "2",
        "--global-batch",
        "4",
        "--aux-channels",
        "8",
        "--lr",
        "3e-3",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "two"),
    ]
    res = subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert json.loads((tmp_path / "two" / "config.json").read_text())["batch_size"] == 2
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-4


def test_init_maps_original_deit3_layer_scale_names(tmp_path):
    import timm

    from freqkit.models.spec import build_model, init_backbone

    src = timm.create_model("deit3_small_patch16_224", num_classes=9, img_size=64)
    sd = {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in src.state_dict().items()}
    assert any("gamma_1" in k for k in sd)
    torch.save(sd, tmp_path / "deit3.pth")
    net = build_model("deit3_small_patch16_224", "segmentation", 3, 32)  # another grid: pos_embed resampled
    report = init_backbone(net, str(tmp_path / "deit3.pth"))
    assert report.missing == () and set(report.unexpected) == {"head.weight", "head.bias", "norm.weight", "norm.bias"}
    torch.testing.assert_close(net.encoder.blocks[11].ls2.gamma, src.blocks[11].ls2.gamma)
    assert net.encoder.pos_embed.shape[1] == 4  # 2 x 2 patches, no class-token entry (DeiT-III)


def test_recipe_help_lists_every_recipe():
    from freqkit.train.config import TrainConfig

    help_text = TrainConfig.__dataclass_fields__["recipe"].metadata["help"]
    assert all(name in help_text for name in RECIPES)
