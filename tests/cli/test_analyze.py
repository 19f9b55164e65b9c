"""``freqkit analyze`` end to end on built-in images, and one clear line (exit 2) for each bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import freqkit.cli as cli

SMALL = ["--img-size", "32", "32", "--batch-size", "4", "--workers", "0"]


@pytest.fixture(autouse=True)
def _only_analyze(monkeypatch):
    # the other subcommands are tested on their own; a broken sibling must not fail these tests
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"analyze": "analyze"})


def _fails(capsys, argv: list[str], *needles: str) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("freqkit analyze: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_end_to_end_builtin_images(tmp_path, capsys):
    out = tmp_path / "rep"
    argv = ["analyze", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "--attention", "--out", str(out), *SMALL]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "RANDOM" in text and "8 images" in text and "blocks.11" in text
    data = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in data["models"]] == ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"]
    assert data["settings"]["image_size"] == [32, 32] and data["settings"]["num_images"] == 8
    assert data["models"][1]["layers"][0]["num_prefix_tokens"] == 2
    assert data["models"][0]["info"]["weights"].startswith("random init")
    assert data["models"][0]["layers"][0]["local_response"] is not None
    assert data["models"][0]["layers"][0]["heads"] is not None and data["models"][0]["layers"][0]["erf"] is not None
    assert len(data["model_cka"]) == 1 and len(data["model_cka"][0]["matrix"]) == 12
    html = (out / "report.html").read_text()
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert html.count("data:image/png;base64,") == len(names) == 12  # 11 diagnostics + the feature maps
    assert (
        "cka.png" in names and "heads_deit_tiny_patch16_224.png" in names and "erf_deit_tiny_distilled_patch16_224.png" in names
    )


def test_image_folder_and_checkpoint(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    model = timm.create_model("deit_tiny_patch16_224", img_size=32)
    torch.nn.init.constant_(model.head.bias, 0.25)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    argv = [
        "analyze",
        "--images",
        str(tmp_path / "imgs"),
        "--checkpoint",
        str(tmp_path / "w.safetensors"),
        "--out",
        str(tmp_path / "o"),
        *SMALL,
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and "checkpoint" in out and "RANDOM" not in out
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert data["models"][0]["info"]["weights"] == f"checkpoint {tmp_path / 'w.safetensors'}"


def test_unknown_model_suggests_close_names(capsys):
    _fails(capsys, ["analyze", "deit_tiny_patch16_22", *SMALL], "unknown model 'deit_tiny_patch16_22'", "deit_tiny_patch16_224")


def test_bad_image_folders(tmp_path, capsys):
    _fails(capsys, ["analyze", "--images", str(tmp_path / "nope"), *SMALL], "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _fails(capsys, ["analyze", "--images", str(tmp_path / "empty"), *SMALL], "holds no images")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a jpeg")
    _fails(capsys, ["analyze", "--images", str(tmp_path / "broken"), *SMALL], "cannot read image", "a.jpg")


def test_size_not_divisible_by_patch(capsys):
    _fails(capsys, ["analyze", "--img-size", "40", "36"], "not divisible by the patch size 16x16", "--img-size (48, 32)")


def test_checkpoint_errors(tmp_path, capsys):
    sd = timm.create_model("deit_tiny_patch16_224", img_size=32).state_dict()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, tmp_path / "bad.safetensors")
    _fails(
        capsys,
        ["analyze", "--checkpoint", str(tmp_path / "bad.safetensors"), *SMALL],
        "missing keys (1): head.bias",
        "unexpected keys (1): extra.weight",
    )
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pth")
    _fails(capsys, ["analyze", "--checkpoint", str(tmp_path / "pickled.pth"), *SMALL], "neither safetensors nor a weights-only")
    _fails(
        capsys,
        ["analyze", "a", "b", "--checkpoint", str(tmp_path / "bad.safetensors")],
        "--checkpoint lists 1 files for 2 models",
    )
    _fails(capsys, ["analyze", "--checkpoint", str(tmp_path / "missing.safetensors")], "--checkpoint", "does not exist")
    _fails(
        capsys,
        ["analyze", "--pretrained", "--checkpoint", str(tmp_path / "bad.safetensors")],
        "--pretrained and --checkpoint",
        "both give weights",
    )


def test_pretrained_offline(monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as hf_constants

    from freqkit.models import factory

    monkeypatch.setattr(factory, "_online", lambda *a, **k: False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    _fails(capsys, ["analyze", "--pretrained", *SMALL], "--pretrained", "offline", "--checkpoint")


def test_help_is_fast_and_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "freqkit", "analyze", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: freqkit analyze" in proc.stdout and "--attention" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "timm" not in imported


def test_folder_with_workers_max_images_and_resume(tmp_path, capsys):
    from PIL import Image

    from freqkit.analysis.stream import load_state

    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    argv = [
        "analyze",
        "deit_tiny_patch16_224",
        "--images",
        str(tmp_path / "imgs"),
        "--img-size",
        "32",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--max-images",
        "3",
        "--no-figures",
        "--save-every",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert cli.main(argv) == 0
    assert "analysed 3 images" in capsys.readouterr().out
    first = json.loads((tmp_path / "o" / "report.json").read_text())
    assert first["settings"]["num_images"] == 3 and not (tmp_path / "o" / "figures").exists()
    state = load_state(tmp_path / "o" / "state" / "analyze-state-rank0of1.pt")
    assert state["position"] == 3 and state["models"]["deit_tiny_patch16_224"]["n"] == 3
    assert cli.main([*argv, "--resume"]) == 0
    again = json.loads((tmp_path / "o" / "report.json").read_text())
    assert again["models"] == first["models"]
    _fails(capsys, [*argv, "--resume", "--cutoff", "0.25"], "different run", "no --resume")


def test_models_create_names_python_parameters(tmp_path):
    from freqkit.errors import FreqkitError
    from freqkit.models import create

    m = create("deit_tiny_patch16_224", img_size=32)
    assert not m.training and m.patch_embed.grid_size == (2, 2)
    assert create("resnet18", img_size=32).fc.out_features == 1000  # models without img_size ignore it
    with pytest.raises(FreqkitError, match=r"img_size=\(48, 32\)"):
        create("deit_tiny_patch16_224", img_size=(40, 36))
    with pytest.raises(FreqkitError, match="checkpoint=.* does not exist"):
        create("deit_tiny_patch16_224", checkpoint=tmp_path / "nope.safetensors")


def test_model_specs_are_analysed(tmp_path, capsys):
    argv = [
        "analyze",
        "vit_mini+fdam",
        "--img-size",
        "64",
        "--no-figures",
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "0",
        "--max-images",
        "2",
    ]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert data["models"][0]["name"] == "vit_mini+fdam" and data["settings"]["image_size"] == [64, 64]
