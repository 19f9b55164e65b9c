"""Checkpoint reading is safe (safetensors / weights-only) and mismatches are reported by key."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from freqkit.errors import FreqkitError
from freqkit.models.checkpoint import load_checkpoint, load_state_dict_file


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_safetensors_and_weights_only_round_trip(tmp_path):
    src, dst = _net(), _net()
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        load_checkpoint(dst, tmp_path / name)
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v)


def test_ddp_prefix_is_stripped():
    src, dst = _net(), _net()
    load_checkpoint(dst, {f"module.{k}": v for k, v in src.state_dict().items()})
    assert torch.equal(dst[0].weight, src[0].weight)


def test_missing_and_unexpected_keys_are_listed():
    sd = _net().state_dict()
    sd.pop("2.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(FreqkitError) as err:
        load_checkpoint(_net(), sd)
    msg = str(err.value)
    assert "missing keys (1): 2.bias" in msg and "unexpected keys (1): extra.weight" in msg
    missing, unexpected = load_checkpoint(_net(), sd, strict=False)
    assert missing == ["2.bias"] and unexpected == ["extra.weight"]


def test_shape_mismatch_is_named():
    sd = _net().state_dict()
    sd["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(FreqkitError, match=r"0\.weight: checkpoint \(5, 4\) vs model \(3, 4\)"):
        load_checkpoint(_net(), sd)


def test_strict_false_lists_the_wrong_shaped_keys_it_drops():
    src, dst = _net(), _net()
    before = dst[0].weight.detach().clone()
    sd = dict(src.state_dict())
    sd["0.weight"] = torch.zeros(5, 4)
    with pytest.warns(UserWarning, match=r"dropped 1 wrong-shaped tensor.*0\.weight: checkpoint \(5, 4\) vs model \(3, 4\)"):
        res = load_checkpoint(dst, sd, strict=False)
    missing, unexpected = res
    assert res.mismatched == ["0.weight"] and missing == [] and unexpected == []
    assert torch.equal(dst[0].weight, before)  # kept, not overwritten
    assert torch.equal(dst[2].weight, src[2].weight)  # the rest loaded


@pytest.mark.parametrize("strict", [True, False])
def test_integer_weights_for_float_parameters_are_refused(strict):
    src, dst = _net(), _net()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = {k: (v * 100).to(torch.int32) if k == "0.weight" else v for k, v in src.state_dict().items()}
    with pytest.raises(FreqkitError, match=r"integer tensors for floating-point weights.*0\.weight: int32 for float32"):
        load_checkpoint(dst, sd, strict=strict)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing half-loaded


def test_integer_buffers_still_load():
    src, dst = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    src.num_batches_tracked += 7
    load_checkpoint(dst, src.state_dict())
    assert int(dst.num_batches_tracked) == 7


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(FreqkitError, match="neither safetensors nor a weights-only torch file"):
        load_state_dict_file(path)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(FreqkitError, match="not a readable safetensors file"):
        load_state_dict_file(tmp_path / "x.safetensors")
    with pytest.raises(FreqkitError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pth")
