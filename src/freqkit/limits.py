"""Every documented size bound of freqkit in one place, each with an environment variable that raises it on purpose.

A bound is checked before the work it guards (a resize, an allocation, a parse), so a value past it
costs one line instead of gigabytes of memory or a traceback. ``FREQKIT_MAX_<NAME>`` (e.g.
``FREQKIT_MAX_RESIZED_PIXELS=400000000``) replaces the default of the bound ``<name>`` for a process.
"""

from __future__ import annotations

import os
import re
from typing import Any

from freqkit.errors import FreqkitError, ParameterError

__all__ = ["LIMITS", "limit", "check_limit", "check_resized_pixels", "json_depth", "loads_json"]

# name -> (default, what it bounds); the defaults sit far above any sensible run and far below what exhausts a machine
LIMITS: dict[str, tuple[int, str]] = {
    "resized_pixels": (1 << 26, "pixels of one image after resizing (a float RGB image of 2^26 pixels takes 0.8 GB)"),
    "bins": (4096, "rings of a radial profile (analyze bins)"),
    "eval_scales": (16, "scale factors of a multi-scale evaluation (eval_scales)"),
    "json_depth": (64, "nesting depth of a JSON file freqkit reads (config.json, metrics.json, state.json)"),
}


def limit(name: str) -> int:
    """The bound ``name``: ``FREQKIT_MAX_<NAME>`` if set (a positive integer), else its default."""
    default, _ = LIMITS[name]
    env = f"FREQKIT_MAX_{name.upper()}"
    text = os.environ.get(env)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise FreqkitError(f"{env}={text!r} is not a positive integer; unset it or give a bound such as {default}")
    return value


def _raise_hint(name: str) -> str:
    return f"set FREQKIT_MAX_{name.upper()} to raise the limit on purpose"


def check_limit(name: str, value: int, param: str, what: str = "") -> None:
    """Raise one ParameterError naming ``param`` when ``value`` exceeds the bound ``name``."""
    bound = limit(name)
    if int(value) > bound:
        raise ParameterError(param, f"{value}{what} is above freqkit's limit of {bound}; lower it, or {_raise_hint(name)}")


def check_resized_pixels(path: Any, size: tuple[int, int], resized: tuple[int, int]) -> None:
    """Refuse an image whose resized (width, height) would hold more pixels than the bound, before resizing it."""
    bound = limit("resized_pixels")
    w, h = int(resized[0]), int(resized[1])
    if w * h > bound:
        raise FreqkitError(
            f"image {path} ({size[0]}x{size[1]}) would be resized to {w}x{h} = {w * h} pixels, above freqkit's limit of {bound} "
            f"(its aspect ratio is extreme); remove or crop the file, or {_raise_hint('resized_pixels')}"
        )


# a string (with escapes) or one bracket: enough to count nesting without parsing
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text`` (0 for a scalar), without recursion."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads_json(text: str, where: str) -> Any:
    """``json.loads`` of ``text`` after a depth check: nesting past the bound is one FreqkitError naming ``where``."""
    import json

    bound = limit("json_depth")
    depth = json_depth(text)
    if depth > bound:
        raise FreqkitError(
            f"{where} nests {depth} levels deep, above freqkit's limit of {bound}; it is damaged or hostile: "
            f"restore or re-create it, or {_raise_hint('json_depth')}"
        )
    return json.loads(text)
