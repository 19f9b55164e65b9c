"""The documentation's figures come from docs/scripts/make_figures.py: each one a page shows is written by the script."""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCRIPT = DOCS / "scripts" / "make_figures.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _referenced() -> set[str]:
    names = set()
    for page in DOCS.rglob("*.md"):
        names |= set(re.findall(r"\]\((?:\.\./)?figures/([A-Za-z0-9_.-]+\.png)\)", page.read_text()))
    return names


def test_every_referenced_figure_is_made_by_the_script_and_exists():
    figures = _script().FIGURES
    referenced = _referenced()
    assert referenced, "no page shows a figure"
    assert referenced <= set(figures), f"figures not made by the script: {referenced - set(figures)}"
    assert set(figures) <= referenced, f"figures the script makes but no page shows: {set(figures) - referenced}"
    for name in figures:
        assert (DOCS / "figures" / name).is_file(), f"run python docs/scripts/make_figures.py ({name} is missing)"


def test_the_script_runs_on_a_tiny_setting(tmp_path):
    paths = _script().main(["--quick", "--out", str(tmp_path)])
    assert sorted(p.name for p in paths) == sorted(_script().FIGURES)
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 100 and height > 100
