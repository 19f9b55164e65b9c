"""Every Python example on the documentation pages runs as written (each block in a fresh namespace, in a
scratch folder), except blocks marked ``<!-- no-test: reason -->`` on the line before, which are counted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts)
# a fenced python block, with the comment line right before it when there is one
_BLOCK = re.compile(r"(?:^<!--\s*no-test:(?P<reason>[^>]*)-->\n)?^```python\n(?P<code>.*?)^```", flags=re.MULTILINE | re.DOTALL)
# blocks that cannot run offline (datasets, GPUs) or are fragments of someone else's loop; raise only together with a
# marker that says why
NO_TEST_EXPECTED = 6


def blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, index on the page, code, no-test reason or None) of every python block."""
    out = []
    for page in PAGES:
        for i, m in enumerate(_BLOCK.finditer(page.read_text())):
            reason = m.group("reason").strip() if m.group("reason") is not None else None
            out.append((str(page.relative_to(DOCS)), i + 1, m.group("code"), reason))
    return out


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b[3] is None]


def test_the_pages_have_examples_and_untested_ones_are_counted():
    assert len(RUN) >= 8
    skipped = [(page, i, reason) for page, i, _, reason in BLOCKS if reason is not None]
    assert all(reason for _, _, reason in skipped), f"a no-test marker without a reason: {skipped}"
    assert len(skipped) == NO_TEST_EXPECTED, f"untested examples changed: {skipped}"


def test_every_fence_is_seen():
    # a block the regex missed (an odd fence) would silently go untested
    for page in PAGES:
        text = page.read_text()
        assert text.count("```python\n") == len(list(_BLOCK.finditer(text))), page


@pytest.mark.parametrize("page,index,code", [b[:3] for b in RUN], ids=[f"{b[0]}-{b[1]}" for b in RUN])
def test_docs_example_runs(page, index, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/{page} python block {index}", "exec"), {"__name__": f"docs_example_{index}"})
    assert capsys.readouterr().out.strip()  # every example prints what it computed
