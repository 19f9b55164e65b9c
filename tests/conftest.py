"""Shared pytest setup: every test starts from the same seeds, and property tests draw the same examples everywhere."""

import sys
from pathlib import Path

import pytest

# tests/conformance builders are imported as the package ``conformance``; tests/closeness.py as ``closeness``
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from hypothesis import settings

    # the same examples on every machine and run (no example database): a failure is reproducible
    settings.register_profile("freqkit", derandomize=True, database=None)
    settings.load_profile("freqkit")
except ImportError:  # hypothesis is a dev extra; the tests that use it import it themselves
    pass


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield
