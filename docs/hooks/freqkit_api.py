"""MkDocs hook: resolve ``::: freqkit.NAME`` API entries to the module that defines NAME, and tidy Sphinx roles.

``freqkit`` loads its public names lazily (PEP 562), so static analysis cannot see ``freqkit.analyze``;
the hook imports freqkit and rewrites each such entry to the defining object's dotted path
(``freqkit.analysis.analyze.analyze``), so the API pages survive modules moving inside the package.
Docstrings cite other objects with Sphinx roles (``:class:`Report```); the rendered page keeps only the name.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

# the docs build from the repository's src/, also where another checkout of freqkit is installed
_SRC = Path(__file__).resolve().parents[2] / "src"

_ENTRY = re.compile(r"^(\s*):::\s+(freqkit\.[A-Za-z_][A-Za-z0-9_]*)\s*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|obj|exc):(?=<code>)")


def resolve(path: str) -> str:
    """Dotted path of the object that defines ``path`` (``freqkit.NAME``); modules and unknown names unchanged."""
    # here, not at module level: mkdocs restores sys.path after loading a hook, which would drop src/ again
    if "freqkit" not in sys.modules and str(_SRC) not in sys.path:
        sys.path.insert(0, str(_SRC))
    freqkit = importlib.import_module("freqkit")
    name = path.split(".", 1)[1]
    if name not in getattr(freqkit, "_LAZY", {}):
        return path  # a submodule (or a name griffe sees itself)
    obj = getattr(freqkit, name)
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else path


def on_page_markdown(markdown: str, **_: object) -> str:
    """Rewrite ``::: freqkit.NAME`` lines of lazily loaded names to their defining module."""
    return _ENTRY.sub(lambda m: f"{m.group(1)}::: {resolve(m.group(2))}", markdown)


def on_page_content(html: str, **_: object) -> str:
    """Drop the Sphinx role prefix in front of rendered code spans (``:class:`X``` shows as ``X``)."""
    return _ROLE.sub("", html)
