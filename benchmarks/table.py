"""Markdown table of the ratios in benchmark JSON files, one column per file (e.g. before / after a commit).

    python -m benchmarks.table before_fdam.json after_fdam.json
    python -m benchmarks.table bench_gpu/summary.json

Rows: every ratio name found in any file; columns: each file's value (with its commit and load
average in the header), then the aim and whether the last file meets it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def markdown(files: list[Path]) -> str:
    """The table for ``files`` (each a benchmark's ``--json`` output or a gpu_suite summary)."""
    data = [json.loads(f.read_text()) for f in files]
    names: list[str] = []
    for d in data:
        names += [k for k in d.get("ratios", {}) if k not in names]
    heads = []
    for f, d in zip(files, data):
        m = d.get("machine", {})
        load = m.get("load_average") or ["?"]
        heads.append(f"{f.stem} ({(m.get('commit') or '?')[:7]}, load {load[0]})")
    lines = ["| ratio | " + " | ".join(heads) + " | aim | met |", "|---" * (len(files) + 3) + "|"]
    for name in names:
        cells, last = [], {}
        for d in data:
            r = d.get("ratios", {}).get(name)
            cells.append("" if r is None or r.get("value") is None else f"{r['value']:.3f}")
            last = r or last
        aim = "" if last.get("aim") is None else f"{'<=' if last['kind'] == 'max' else '>='} {last['aim']}"
        met = {True: "met", False: "missed", None: ""}[last.get("met")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {aim} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(markdown(args.files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
