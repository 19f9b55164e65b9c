"""Every public name of freqkit has an entry on the API reference pages, and each entry resolves to that name's object."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import freqkit

DOCS = Path(__file__).resolve().parents[2] / "docs"
ENTRIES = {
    m.group(1): page.name
    for page in sorted((DOCS / "api").glob("*.md"))
    for m in re.finditer(r"^:::\s+(freqkit(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*$", page.read_text(), flags=re.MULTILINE)
}


def _hook():
    spec = importlib.util.spec_from_file_location("freqkit_api_hook", DOCS / "hooks" / "freqkit_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _object(path: str):
    """Import the object at a dotted path (module, then attributes)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_every_public_name_has_an_api_entry():
    missing = [name for name in freqkit.__all__ if f"freqkit.{name}" not in ENTRIES]
    assert not missing, f"add '::: freqkit.NAME' entries to docs/api/ for {missing}"


@pytest.mark.parametrize("name", freqkit.__all__)
def test_entry_resolves_to_the_public_object(name):
    # the build hook rewrites lazily loaded names to their defining module; that path must be the same object
    resolved = _hook().resolve(f"freqkit.{name}")
    assert _object(resolved) is getattr(freqkit, name)
    if name not in freqkit._SUBMODULES:
        assert resolved != f"freqkit.{name}"  # static analysis cannot see a lazy name: it must be rewritten


def test_every_entry_on_the_pages_imports():
    hook = _hook()
    for path in ENTRIES:
        assert _object(hook.resolve(path)) is not None, path


def test_the_hook_drops_sphinx_roles_only_before_code():
    hook = _hook()
    assert hook.on_page_content("see :class:<code>Report</code> and :class: text") == "see <code>Report</code> and :class: text"
    assert hook.on_page_markdown("::: freqkit.analyze\n::: freqkit.spectral\n").splitlines() == [
        f"::: {hook.resolve('freqkit.analyze')}",
        "::: freqkit.spectral",
    ]
