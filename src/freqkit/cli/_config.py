"""Command-line flags generated from a configuration dataclass, and library errors shown with flag names.

Each dataclass field becomes ``--field-name`` (or its ``flag`` metadata) with the field's ``help``,
``choices`` and default, so a default or a help text is written once, in the dataclass.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Iterable, Optional

from freqkit.errors import FreqkitError, ParameterError

__all__ = ["add_dataclass_arguments", "dataclass_kwargs", "given_fields", "flag_name", "error_line"]

# attributes of the parser namespace: field name -> flag (for error_line); the fields whose flags were typed
_FLAGS_ATTR = "_flags"
_GIVEN_ATTR = "_given_fields"


def _mark_given(namespace: argparse.Namespace, dest: str) -> None:
    setattr(namespace, _GIVEN_ATTR, (getattr(namespace, _GIVEN_ATTR, None) or frozenset()) | {dest})


class _StoreGiven(argparse.Action):
    """Store the value and remember that the flag was typed (so it can override a recipe)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _mark_given(namespace, self.dest)


class _BoolGiven(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag`` that remembers it was typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _mark_given(namespace, self.dest)


def given_fields(args: argparse.Namespace) -> frozenset:
    """The dataclass fields whose flags were typed on the command line (the rest hold their defaults)."""
    return getattr(args, _GIVEN_ATTR, None) or frozenset()


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a dataclass field: its ``flag`` metadata, else ``--`` + the name with dashes."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _base_type(hint: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of a field annotation such as ``Optional[int]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return args[0], True
    return hint, False


def _parser_for(kind: type, optional: bool, name: str):
    def parse(text: str):
        if optional and text.lower() in ("none", ""):
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if kind is float and name == "clip_grad" and value == 0:
            return None  # 0 switches clipping off, as in timm's train script
        return value

    parse.__name__ = kind.__name__
    return parse


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: Optional[dict[str, Any]] = None,
) -> None:
    """Add one flag per field of dataclass ``cls`` (not in ``exclude``; ``defaults`` override the dataclass's)."""
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    flags: dict[str, str] = parser.get_default(_FLAGS_ATTR) or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("cli", True) or "help" not in f.metadata:
            continue
        flag = flag_name(f)
        flags[f.name] = flag
        default = defaults.get(f.name, f.default)
        kind, optional = _base_type(hints[f.name])
        text = f.metadata["help"].replace("%", "%%")
        if kind is bool:
            shown = "auto" if default is None else ("on" if default else "off")
            parser.add_argument(flag, dest=f.name, action=_BoolGiven, default=default,
                                help=f"{text} (default: {shown})")
            continue
        parser.add_argument(flag, dest=f.name, action=_StoreGiven, type=_parser_for(kind, optional, f.name), default=default,
                            choices=f.metadata.get("choices"), metavar=f.name.upper() if f.metadata.get("choices") is None else None,
                            help=f"{text} (default: {default})")
    parser.set_defaults(**{_FLAGS_ATTR: flags, _GIVEN_ATTR: frozenset()})


def dataclass_kwargs(args: argparse.Namespace, cls: type, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The parsed values of ``cls``'s fields that ``add_dataclass_arguments`` added."""
    flags = getattr(args, _FLAGS_ATTR, {}) or {}
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name in flags and f.name not in exclude}


def error_line(err: FreqkitError, args: Optional[argparse.Namespace]) -> str:
    """The message of ``err`` as the command line user should read it: parameters become flags.

    A ParameterError names its parameter, shown as the flag that sets it; inside a sentence ``param=True`` /
    ``param=False`` / ``param=VALUE`` read as ``--flag`` / ``no --flag`` / ``--flag VALUE`` for the command's flags.
    """
    flags = (getattr(args, _FLAGS_ATTR, None) or {}) if args is not None else {}
    message = str(err)
    if isinstance(err, ParameterError):
        message = f"{flags.get(err.param, '--' + err.param.replace('_', '-'))} {err.detail}"
    for param in sorted(flags, key=len, reverse=True):
        flag = flags[param]
        message = message.replace(f"{param}=True", flag).replace(f"{param}=False", f"no {flag}").replace(f"{param}=", f"{flag} ")
    return message
