"""Released-code conformance: every shipped fixture, and every one in FREQKIT_CONFORMANCE_DIR, runs through freqkit.

``tests/conformance/fixtures/`` ships the layer-level fixtures (see its README for how they were made);
``FREQKIT_CONFORMANCE_DIR`` (one folder, or several joined with ``os.pathsep``) adds more, e.g. the
whole-model ones. Each ``*.safetensors`` fixture holds the released module's state dict (``state.*``), inputs
(``input.*``) and outputs (``output.*``) plus JSON metadata naming the released class. One mapping
from released class names to freqkit builders covers every fixture, so a new file of a known class
is picked up without a code change.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch

SHIPPED = Path(__file__).resolve().parent / "fixtures"
EXTRA = [Path(p) for p in os.environ.get("FREQKIT_CONFORMANCE_DIR", "").split(os.pathsep) if p]
ATOL = 1e-4

# released class (as written in the fixture metadata) -> "module:function" under tests/conformance/
BUILDERS: dict[str, str] = {
    "AttentionwithAttInv": "builders_fdam:attinv",
    "GroupDynamicScale": "builders_fdam:freqscale",
    "Layer_scale_init_Block": "builders_fdam:block",
    "vit_models_freq": "builders_fdam:backbone",
    "Attention (attnscale.py)": "builders_antismooth:attnscale",
    "Block (featscale.py)": "builders_antismooth:featscale_block",
    "Attention (Image/gfsa.py)": "builders_antismooth:gfsa",
    "SPAM": "builders_spanet:spam",
    "SPANet": "builders_spanet:spanet",
    "ExSPAM (models/spanetv2.py, interleave layout)": "builders_spanet:exspam",
    "SPANetV2 (models/spanetv2.py)": "builders_spanet:spanetv2",
}


def _fixtures() -> list[Path]:
    """Shipped fixtures, then those of FREQKIT_CONFORMANCE_DIR that are not shipped (same file name: one run)."""
    found: dict[str, Path] = {}
    for folder in [SHIPPED, *EXTRA]:
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            found.setdefault(path.name, path)
    return sorted(found.values(), key=lambda p: p.name)


def test_shipped_fixtures_are_found():
    # a clean clone, with nothing beside it, runs the shipped fixtures
    assert len([p for p in _fixtures() if p.parent == SHIPPED]) >= 8


def load_fixture(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(metadata, state dict, inputs, outputs) of one fixture file, prefixes stripped."""
    from safetensors import safe_open

    state, inputs, outputs = {}, {}, {}
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["json"])
        for key in f.keys():
            kind, _, name = key.partition(".")
            {"state": state, "input": inputs, "output": outputs}[kind][name] = f.get_tensor(key)
    return meta, state, inputs, outputs


def resolve_builder(cls: str):
    """The builder for a released class name; an unknown class fails naming it."""
    if cls not in BUILDERS:
        pytest.fail(
            f"conformance fixture of unknown released class {cls!r}: add it to BUILDERS in "
            f"tests/conformance/test_conformance.py (known: {sorted(BUILDERS)})"
        )
    module, func = BUILDERS[cls].split(":")
    return getattr(importlib.import_module(f"conformance.{module}"), func)


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.stem)
def test_fixture_matches_released_output(path: Path) -> None:
    meta, state, inputs, outputs = load_fixture(path)
    builder = resolve_builder(meta["class"])
    torch.manual_seed(0)
    with torch.no_grad():
        got = builder(meta, state, inputs)
    assert set(got) == set(outputs), f"builder returned {sorted(got)}, fixture has {sorted(outputs)}"
    for name, want in outputs.items():
        assert got[name].shape == want.shape, name
        err = (got[name].float() - want).abs().max().item()
        assert err <= ATOL, f"{path.name}: output {name} differs by {err:.3g} > {ATOL}"
