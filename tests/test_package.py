"""Package-level behaviour: lazy public API, fast CLI help, ``python -m freqkit``."""
from __future__ import annotations

import subprocess
import sys


def test_import_is_lazy_and_cli_help_skips_torch():
    code = (
        "import sys, freqkit, freqkit.cli; freqkit.cli.build_parser(); "
        "print('torch' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_python_m_freqkit_lists_every_subcommand():
    res = subprocess.run([sys.executable, "-m", "freqkit", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for name in ("analyze", "compare", "train", "eval", "simulate"):
        assert name in res.stdout


def test_public_api_resolves_and_registers_models():
    import timm

    import freqkit

    assert callable(freqkit.convert) and callable(freqkit.analyze)
    assert timm.list_models("deit_small_fdam*") and timm.list_models("spanet_small")
