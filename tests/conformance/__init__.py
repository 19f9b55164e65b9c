"""Released-code conformance fixtures: shipped in ``fixtures/``, more in ``FREQKIT_CONFORMANCE_DIR`` (folders joined by ``os.pathsep``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

SHIPPED = Path(__file__).resolve().parent / "fixtures"


def fixture_folders() -> list[Path]:
    """The shipped folder, then each folder of ``FREQKIT_CONFORMANCE_DIR``."""
    return [SHIPPED] + [Path(p) for p in os.environ.get("FREQKIT_CONFORMANCE_DIR", "").split(os.pathsep) if p]


def find_fixture(file_name: str) -> Optional[Path]:
    """The first ``file_name`` in :func:`fixture_folders`, or None when no folder has it."""
    return next((folder / file_name for folder in fixture_folders() if (folder / file_name).is_file()), None)
