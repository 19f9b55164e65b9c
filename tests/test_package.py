"""Package-level behaviour: lazy public API, fast CLI help, ``python -m freqkit``."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_lazy_and_cli_help_skips_torch():
    code = "import sys, freqkit, freqkit.cli; freqkit.cli.build_parser(); print('torch' in sys.modules, 'timm' in sys.modules)"
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


# every family file registers its models at the bottom with timm's decorator; this finds them independently of timm
def _registered_names() -> list[str]:
    import ast
    from pathlib import Path

    import freqkit

    names = []
    for path in sorted((Path(freqkit.__file__).parent / "models").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                (isinstance(d, ast.Name) and d.id == "register_model")
                or (isinstance(d, ast.Attribute) and d.attr == "register_model")
                for d in node.decorator_list
            ):
                names.append(node.name)
    return names


def test_import_freqkit_is_enough_for_timm_in_either_order():
    names = _registered_names()
    assert len(names) >= 20
    for order in (
        "import freqkit, timm",
        "import timm, freqkit",
        "import freqkit; from timm import create_model as c; import timm",
        "import freqkit.layers, timm",
        "from freqkit.layers import SPAM; import timm",
    ):
        code = f"{order}; import sys; missing = [n for n in {names!r} if not timm.is_model(n)]; print(missing)"
        res = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True, check=True)
        assert res.stdout.strip() == "[]", (order, res.stdout, res.stderr)
    code = "import freqkit, timm; m = timm.create_model('spanet_small', num_classes=3); print(type(m).__name__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "SPANet"


def test_train_is_a_function_and_a_package():
    import freqkit
    from freqkit.train.loop import train

    assert callable(freqkit.train) and freqkit.train.TrainConfig is freqkit.TrainConfig
    assert freqkit.train.train is train
