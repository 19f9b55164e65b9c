"""Shared pytest setup: deterministic, single-threaded-friendly defaults."""
import os
import sys
from pathlib import Path

import pytest

# tests/conformance builders are imported as the package ``conformance``
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield
