"""``freqkit simulate`` end to end on a tiny grid: figures, JSON curves, errors."""

from __future__ import annotations

import json
import subprocess
import sys

from freqkit.cli import main


def test_simulate_writes_figures_and_curves(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(
        [
            "simulate",
            "--size",
            "5",
            "6",
            "--windows",
            "1,3,full",
            "--stencils",
            "box3,laplacian",
            "--attention",
            "--periodic",
            "--bins",
            "4",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    for name in ("windows.png", "stencils.png", "attention.png", "curves.json"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "curves.json").read_text())
    assert data["grid"] == [5, 6] and data["periodic"] is True
    assert set(data["windows"]) == {"k=1", "k=3", "full"} and set(data["stencils"]) == {"box3", "laplacian"}
    ident, full = data["windows"]["k=1"], data["windows"]["full"]
    assert all(abs(r - 1) < 1e-9 for r in ident["response"])  # k = 1: all-pass
    assert abs(full["response"][0] - 1) < 1e-9 and all(abs(r) < 1e-9 for r in full["response"][1:])  # torus: DC only
    assert sum(full["dims"]) == 30 and full["radial_freqs"][0] == full["freqs"][0]
    lap = data["stencils"]["laplacian"]  # 4 L on the torus: response 4 * lambda per eigenspace
    assert all(abs(r - 4 * f) < 1e-9 for f, r in zip(lap["freqs"], lap["response"]))
    printed = capsys.readouterr().out
    assert "window k=3" in printed and str(out / "windows.png") in printed


def test_simulate_bad_window_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["simulate", "--size", "4", "--windows", "2,full", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--windows" in err


def test_subcommand_module_does_not_import_torch():
    code = "import sys, freqkit.cli.simulate; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
