"""Flags generated from ``TrainConfig``: one default and one help text per setting, errors shown as flags."""

from __future__ import annotations

import dataclasses

import pytest

from freqkit.cli import build_parser, main
from freqkit.cli._config import flag_name
from freqkit.errors import ParameterError
from freqkit.train.config import TrainConfig


def _fields():
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli", True)]


def test_every_config_field_is_a_train_flag_with_the_dataclass_default():
    args = build_parser().parse_args(["train"])
    for f in _fields():
        assert getattr(args, f.name) == f.default, f.name
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in _fields():
        assert flag_name(f) in help_text


def test_flags_parse_to_config_values():
    args = build_parser().parse_args(
        ["train", "--steps", "7", "--clip-grad", "0", "--no-amp", "--workers", "2", "--warmup-steps", "none", "--no-progress"]
    )
    assert (args.steps, args.clip_grad, args.amp, args.num_workers, args.warmup_steps, args.progress) == (
        7,
        None,
        False,
        2,
        None,
        False,
    )


def test_library_error_names_the_parameter_and_cli_names_the_flag(tmp_path, capsys):
    with pytest.raises(ParameterError, match=r"^layer_decay must be in \(0, 1\]"):
        TrainConfig(layer_decay=1.5).validate()
    assert main(["train", "--layer-decay", "1.5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "freqkit train: error: --layer-decay must be in (0, 1], got 1.5"


def test_compare_shares_the_training_flags():
    args = build_parser().parse_args(["compare", "--lr", "0.01", "--batch-size", "3"])
    assert (args.lr, args.batch_size, args.steps) == (0.01, 3, 500)
