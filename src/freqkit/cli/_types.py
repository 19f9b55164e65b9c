"""Argument types of generated flags: an annotation -> its scalar type, and the text -> value parser."""

from __future__ import annotations

import argparse
import typing
from typing import Any

__all__ = ["scalar_type", "parser_for"]


def scalar_type(hint: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of an annotation such as ``Optional[int]``; paths and unions of them read as str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    kind = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return (kind if kind in (bool, int, float) else str), optional


def parser_for(kind: type, optional: bool, name: str):
    """The argparse ``type`` of a flag: ``kind(text)``, 'none' / '' -> None when optional, clip_grad 0 -> None."""

    def parse(text: str):
        if optional and text.lower() in ("none", ""):
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        return None if kind is float and name == "clip_grad" and value == 0 else value  # 0: no clipping, as in timm

    parse.__name__ = kind.__name__
    return parse
