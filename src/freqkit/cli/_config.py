"""Command-line flags generated from the library's dataclasses and signatures (``error_line`` in ``cli/__init__`` shows errors as flags).

Each dataclass field or function parameter becomes ``--name-with-dashes`` (or a field's ``flag`` metadata) with
its type, default and help (a field's ``help`` metadata, or the library's help mapping for a function), so a
default or a help text is written once, in the library.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing
from typing import Any, Callable, Iterable, Mapping, Optional

from freqkit.cli._types import parser_for, scalar_type

__all__ = ["add_dataclass_arguments", "add_signature_arguments", "dataclass_kwargs", "given_fields", "flag_name", "flags_of"]

_FLAGS, _GIVEN = "_flags", "_given_fields"  # namespace attributes: parameter -> flag (error_line); the flags typed


def _mark(namespace: argparse.Namespace, dest: str) -> None:
    setattr(namespace, _GIVEN, (getattr(namespace, _GIVEN, None) or frozenset()) | {dest})


class _StoreGiven(argparse.Action):
    """Store the value and remember that the flag was typed (so it can override a recipe)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        _mark(namespace, self.dest)


class _BoolGiven(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag`` that remembers it was typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _mark(namespace, self.dest)


def flags_of(args: Optional[argparse.Namespace]) -> dict[str, str]:
    """Parameter name -> flag of every generated flag of the parsed subcommand."""
    return (getattr(args, _FLAGS, None) or {}) if args is not None else {}


def given_fields(args: argparse.Namespace) -> frozenset:
    """The fields whose flags were typed on the command line (the rest hold their defaults)."""
    return getattr(args, _GIVEN, None) or frozenset()


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a dataclass field: its ``flag`` metadata, else ``--`` + the name with dashes."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _add(parser, flags: dict, name: str, flag: str, hint: Any, default: Any, text: str, choices=None) -> None:
    flags[name] = flag
    kind, optional = scalar_type(hint)
    text = text.replace("%", "%%")
    if kind is bool:
        shown = "auto" if default is None else ("on" if default else "off")
        parser.add_argument(flag, dest=name, action=_BoolGiven, default=default, help=f"{text} (default: {shown})")
    else:
        parser.add_argument(
            flag,
            dest=name,
            action=_StoreGiven,
            type=parser_for(kind, optional, name),
            default=default,
            choices=choices,
            metavar=None if choices else name.upper(),
            help=f"{text} (default: {default})",
        )


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (), defaults: Optional[dict[str, Any]] = None
) -> None:
    """Add one flag per field of dataclass ``cls`` (not in ``exclude``; ``defaults`` override the dataclass's)."""
    hints, defaults, flags = typing.get_type_hints(cls), defaults or {}, parser.get_default(_FLAGS) or {}
    for f in dataclasses.fields(cls):
        if f.name not in exclude and f.metadata.get("cli", True) and "help" in f.metadata:
            _add(
                parser,
                flags,
                f.name,
                flag_name(f),
                hints[f.name],
                defaults.get(f.name, f.default),
                f.metadata["help"],
                f.metadata.get("choices"),
            )
    parser.set_defaults(**{_FLAGS: flags, _GIVEN: frozenset()})


def add_signature_arguments(
    parser: argparse.ArgumentParser, func: Callable, helps: Mapping[str, str], defaults: Optional[dict[str, Any]] = None
) -> None:
    """Add one flag per parameter of ``func`` that ``helps`` describes (type and default from the signature; ``defaults`` override)."""
    hints, flags, defaults = typing.get_type_hints(func), parser.get_default(_FLAGS) or {}, defaults or {}
    for name, p in inspect.signature(func).parameters.items():
        if name in helps:
            _add(
                parser,
                flags,
                name,
                "--" + name.replace("_", "-"),
                hints.get(name, str),
                defaults.get(name, p.default),
                helps[name],
            )
    parser.set_defaults(**{_FLAGS: flags, _GIVEN: frozenset()})


def dataclass_kwargs(args: argparse.Namespace, cls: type, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The parsed values of ``cls``'s fields that ``add_dataclass_arguments`` added."""
    flags = flags_of(args)
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name in flags and f.name not in exclude}
