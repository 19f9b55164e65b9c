"""``freqkit.simulate``: closed-form responses on small grids, figures and saving."""

from __future__ import annotations

import json

import pytest

import freqkit
from freqkit.errors import ParameterError
from freqkit.spectral.graph import STENCILS, stencil


def test_closed_form_responses_on_a_torus(tmp_path):
    sim = freqkit.simulate((4, 6), windows=[1, 3, None], stencils=["laplacian", "box3"], periodic=True, bins=4)
    ident, full = sim.curves["windows"]["k=1"], sim.curves["windows"]["full"]
    assert ident["response"] == pytest.approx([1.0] * len(ident["response"]), abs=1e-9)  # the identity passes everything
    assert full["response"][0] == pytest.approx(1.0) and max(map(abs, full["response"][1:])) < 1e-9  # global mean: DC only
    lap = sim.curves["stencils"]["laplacian"]  # 4 L on the torus: response 4 lambda per eigenspace
    assert lap["response"] == pytest.approx([4 * f for f in lap["freqs"]], abs=1e-9)
    assert sum(full["dims"]) == 24 and set(sim.plot()) == {"windows", "stencils"}
    paths = sim.save(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "curves.json").read_text())["grid"] == [4, 6] and len(paths) == 3


def test_stencil_registry_and_bad_arguments():
    assert set(STENCILS) >= {"box3", "laplacian", "sharpen"} and stencil("box3").sum().item() == pytest.approx(1.0)
    with pytest.raises(ParameterError, match="^windows 2 is not an odd window size"):
        freqkit.simulate(5, windows=[2])
    with pytest.raises(ParameterError, match="^stencils has unknown stencil 'blur'"):
        freqkit.simulate(5, stencils=["blur"])
    with pytest.raises(ParameterError, match="^size"):
        freqkit.simulate((1, 5))
