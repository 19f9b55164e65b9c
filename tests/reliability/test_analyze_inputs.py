"""analyze reads images as training does, checks them (and its output folder) before the work, and resumes only the same work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import freqkit.cli as cli
from freqkit import analyze
from freqkit.errors import FreqkitError


class _Counting(torch.nn.Module):
    """A small conv net that counts its forward calls (to prove a check ran before any batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)])
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        for s in self.stages:
            x = torch.relu(s(x))
        return x


def _model() -> _Counting:
    torch.manual_seed(0)
    return _Counting()


def _photos(folder, count: int = 4, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Smooth random images (a few low-frequency waves) written as 8-bit PNGs; returns the 8-bit arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(count):
        g = sum(np.sin(2 * np.pi * (rng.uniform(0.5, 3) * xx + rng.uniform(0.5, 3) * yy + rng.uniform())) for _ in range(3))
        a = np.round(255 * (g - g.min()) / (g.max() - g.min())).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")
        out.append(a)
    return out


def _hf(report) -> list[float]:
    return [layer.hf_ratio for layer in report.models[0].layers]


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    eight = _photos(tmp_path / "eight")
    (tmp_path / "sixteen").mkdir()
    for i, a in enumerate(eight):
        # the same intensities in 16 bits: v * 257 / 65535 == v / 255 exactly
        Image.fromarray((a.astype(np.uint16) * 257)).save(tmp_path / "sixteen" / f"{i}.png")
    common = dict(img_size=32, layers=["stages.0", "stages.1"], cka=False, methods=False)
    a = analyze(_model(), str(tmp_path / "eight"), **common)
    b = analyze(_model(), str(tmp_path / "sixteen"), **common)
    # 8-bit files go through PIL's resize, 16-bit ones through the tensor resize: equal up to resampling rounding
    np.testing.assert_allclose(_hf(b), _hf(a), rtol=0.05)
    assert min(_hf(a)) > 0.01  # clipped to white, the 16-bit images would have nearly no high frequencies


def test_out_of_range_float_images_are_one_line(tmp_path):
    (tmp_path / "f").mkdir()
    Image.fromarray(np.full((16, 16), 300.0, np.float32), mode="F").save(tmp_path / "f" / "x.tif")
    with pytest.raises(FreqkitError, match=r"float image .*x.tif has values in \[300, 300\]"):
        analyze(_model(), str(tmp_path / "f"), img_size=16, methods=False, check_headers=False)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    _photos(tmp_path / "imgs", 1, size=64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 pixels > 2 x 1000
    for headers in (True, False):
        with pytest.raises(FreqkitError, match=r"decompression-bomb limit .*MAX_IMAGE_PIXELS") as err:
            analyze(_model(), str(tmp_path / "imgs"), img_size=16, methods=False, check_headers=headers)
        assert "\n" not in str(err.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_in_the_folder_does_not_block(tmp_path):
    _photos(tmp_path / "imgs", 2, size=32)
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    code = (
        "import torch, freqkit; torch.manual_seed(0); "
        f"r = freqkit.analyze(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), {str(tmp_path / 'imgs')!r}, img_size=16, methods=False, layers=['0']); "
        "print('images', r.settings['num_images'])"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("analyze blocked on a named pipe in the image folder")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "images 2" in run.stdout  # the pipe is not an image file


def test_a_bad_image_at_the_end_fails_before_the_first_batch(tmp_path):
    _photos(tmp_path / "imgs", 4, size=32)
    (tmp_path / "imgs" / "9.png").write_bytes(b"not a png at all")
    model = _model()
    with pytest.raises(FreqkitError, match=r"cannot read image .*9.png"):
        analyze(model, str(tmp_path / "imgs"), img_size=16, batch_size=1, methods=False)
    assert model.calls == 0  # found by the header check, before any image went through the model
    skipped = _model()
    with pytest.raises(FreqkitError, match=r"cannot read image .*9.png"):
        analyze(skipped, str(tmp_path / "imgs"), img_size=16, batch_size=1, methods=False, check_headers=False)
    assert skipped.calls == 4  # without the check it is found only when its batch comes


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_cli_out_is_checked_before_any_work(tmp_path, kind, capsys):
    if kind == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    else:
        out.mkdir()
        out.chmod(0o500)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "0.png").write_bytes(b"broken")  # reading it would fail with another message
    code = cli.main(
        [
            "analyze",
            "deit_tiny_patch16_224",
            "--images",
            str(tmp_path / "imgs"),
            "--img-size",
            "32",
            "--quiet",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "0.png" not in err[0], err


def _state_run(tmp_path, **kw):
    return analyze(_model(), str(tmp_path / "imgs"), img_size=16, batch_size=2, state_dir=tmp_path / "state", cka=False, **kw)


def test_resume_refuses_renamed_files(tmp_path):
    _photos(tmp_path / "imgs", 5, size=24)
    _state_run(tmp_path)
    # a rename in the middle of the list keeps the count, the first and the last name
    os.rename(tmp_path / "imgs" / "2.png", tmp_path / "imgs" / "2b.png")
    with pytest.raises(FreqkitError, match=r"saved by a different run \(the image files changed"):
        _state_run(tmp_path, resume=True)


def test_resume_refuses_another_process_count(tmp_path):
    _photos(tmp_path / "imgs", 4, size=24)
    _state_run(tmp_path)
    state = tmp_path / "state"
    # the files two processes would have left: rank 0 and rank 1 of 2
    shutil.copy(state / "analyze-state-rank0of1.pt", state / "analyze-state-rank0of2.pt")
    shutil.move(state / "analyze-state-rank0of1.pt", state / "analyze-state-rank1of2.pt")
    with pytest.raises(FreqkitError, match=r"saved by 2 processes, this run has 1; resume with 2 processes"):
        _state_run(tmp_path, resume=True)


def test_a_changed_batch_size_is_named(tmp_path):
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return images[i]

    analyze(_model(), Images(), batch_size=2, state_dir=tmp_path / "s", cka=False, methods=False)
    with pytest.raises(FreqkitError, match=r"batch_size 2 -> 3") as err:
        analyze(_model(), Images(), batch_size=3, state_dir=tmp_path / "s", cka=False, methods=False, resume=True)
    assert "differs in: data" not in str(err.value)


def test_a_resume_of_complete_statistics_writes_the_same_report(tmp_path):
    _photos(tmp_path / "imgs", 4, size=24)
    full = _state_run(tmp_path, methods=True)
    again = _state_run(tmp_path, methods=True, resume=True)  # nothing left to read
    assert full.methods is not None and again.methods is not None
    assert again.to_dict() == full.to_dict()


def test_cli_device_message_names_the_flag_once(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = cli.main(["analyze", "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--device cpu" in err and "----device" not in err, err
