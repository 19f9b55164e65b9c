"""The run folder: the one owner of every file a training run writes and of reading them back.

``<out>/model.safetensors`` (the final model, its config in the metadata), ``config.json``, ``metrics.json``,
``log.jsonl`` (one JSON record per line), ``timing.json`` and ``checkpoint/``. :func:`freqkit.train` writes
through :class:`RunDir`, :func:`freqkit.open_run` reads through :func:`read_run`, and ``compare`` asks
:meth:`RunDir.finished_as` whether a finished run can be reused.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from freqkit.errors import FreqkitError, ParameterError
from freqkit.io import atomic_write_json, atomic_write_text, read_json
from freqkit.limits import loads_json
from freqkit.train.config import RESUME_SENSITIVE, TrainConfig

__all__ = ["RunDir", "read_run", "train_history", "build_run_model", "REUSE_KEYS"]

# filled in once the data is read and the world size known: compared only when the asking config has them
_RESOLVED_LATER = ("task", "img_size", "num_classes", "global_batch_size")
# settings that define a finished run: every one that changes the math (RESUME_SENSITIVE), and how it was evaluated
REUSE_KEYS = tuple(k for k in RESUME_SENSITIVE if k not in _RESOLVED_LATER) + (
    "batch_size",
    "eval_mode",
    "eval_flip",
    "eval_scales",
)
_FIX = "the training config"


class RunDir:
    """Paths and writers of one run folder ``path``."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.weights = self.path / "model.safetensors"
        self.config_file = self.path / "config.json"
        self.metrics_file = self.path / "metrics.json"
        self.log_file = self.path / "log.jsonl"
        self.timing_file = self.path / "timing.json"
        self.checkpoint = self.path / "checkpoint"

    def check_resume(self, saved: dict[str, Any], cfg: TrainConfig, folder: Path) -> None:
        """Raise unless checkpoint config ``saved`` agrees with ``cfg`` on every setting that changes the math."""
        defaults = TrainConfig().to_dict()  # a setting newer than the checkpoint had its default then
        diffs = [k for k in RESUME_SENSITIVE if saved.get(k, defaults.get(k)) != getattr(cfg, k)]
        if diffs:
            k = diffs[0]
            raise FreqkitError(
                f"cannot resume from {folder}: it was trained with {k}={saved.get(k)!r}, this run has {k}={getattr(cfg, k)!r}; "
                "resume with the original settings or use a new out folder"
            )

    def check_same_data(self, saved: Optional[dict[str, Any]], now: dict[str, Any], folder: Path) -> None:
        """Refuse to resume on data that changed since the checkpoint (renamed, added, removed or resized files)."""
        if not isinstance(saved, dict):
            return  # a checkpoint written before data identities were recorded
        for split in ("train", "val"):
            a, b = saved.get(split) or {}, now[split]
            if a != b:
                what = (
                    f"{a.get('items')} -> {b['items']} items"
                    if a.get("items") != b["items"]
                    else "files renamed, replaced or resized"
                )
                raise FreqkitError(
                    f"cannot resume from {folder}: the {split} data changed since it was saved ({what}); "
                    "resume on the same data, or use a new out folder"
                )

    def check_fresh(self) -> None:
        """Refuse to start over in a folder that holds a run (its model, checkpoint or log): resume or overwrite must say so."""
        held = [
            n
            for n in ("model.safetensors", "metrics.json", "checkpoint", "checkpoint.old", "log.jsonl")
            if (self.path / n).exists()
        ]
        if held:
            raise ParameterError(
                "out",
                f"{str(self.path)!r} already holds a run ({', '.join(held)}); pass resume=True to continue it, overwrite=True "
                "to start it again (its log and checkpoint are replaced), or use a new out folder",
            )

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to ``log.jsonl``."""
        # an append-only log: a kill can leave at most a partial last line, which truncate_log drops on resume
        with open(self.log_file, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_log(self, step: int, finished: bool) -> None:
        """Keep the log records up to the resumed checkpoint's ``step``; drop partial lines and records the resumed run repeats.

        Evaluations at a checkpoint's step ran before it was saved and are kept, except the final one
        (``finished``: it runs after the last save, and runs again).
        """
        if not self.log_file.is_file():
            return
        kept = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            try:
                rec = loads_json(line, "a log line")
            except ValueError:  # a line cut by a kill; FreqkitError (too deep) is a ValueError too
                continue
            if not (isinstance(rec, dict) and isinstance(rec.get("step"), int)) or rec["step"] > step:
                continue
            if finished and rec["step"] == step and rec.get("split") == "val":
                continue
            kept.append(line)
        atomic_write_text(self.log_file, "".join(f"{line}\n" for line in kept))

    def records(self) -> list[dict[str, Any]]:
        """Every complete record of ``log.jsonl`` (a line cut by a kill is skipped: the records before it still stand)."""
        out = []
        if self.log_file.is_file():
            for line in self.log_file.read_text(errors="replace").splitlines():
                try:
                    rec = loads_json(line, "a log line")
                except ValueError:  # FreqkitError (too deep) is a ValueError too
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def clear_log(self) -> None:
        """Remove the log of an earlier run (a fresh start)."""
        if self.log_file.exists():
            self.log_file.unlink()

    def save_model(self, model: nn.Module, cfg: TrainConfig) -> None:
        """The final model (config in its metadata) and ``config.json``."""
        from freqkit.train.checkpoint import save_model_file

        save_model_file(model, self.weights, metadata={"config": json.dumps(cfg.to_dict())})
        atomic_write_json(self.config_file, cfg.to_dict())

    def save_metrics(self, metrics: dict[str, float]) -> None:
        """``metrics.json``."""
        atomic_write_json(self.metrics_file, metrics)

    def save_timing(self, seconds: float, seconds_per_step: float) -> None:
        """``timing.json``: wall time of the run and of one step."""
        atomic_write_json(self.timing_file, {"seconds": seconds, "seconds_per_step": seconds_per_step})

    def finished_as(self, cfg: TrainConfig) -> bool:
        """Whether this folder holds a finished run with ``cfg``'s settings (so it can be reused instead of retrained)."""
        if not all(p.is_file() for p in (self.config_file, self.weights, self.metrics_file)):
            return False
        saved = read_json(self.config_file, _FIX)
        want, defaults = cfg.to_dict(), TrainConfig().to_dict()
        # a setting newer than the saved run had its default then
        keys = REUSE_KEYS + tuple(k for k in _RESOLVED_LATER if want[k])
        return all(saved.get(k, defaults[k]) == want[k] for k in keys)


def _safetensors_config(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise FreqkitError(f"{path} is not a readable safetensors file ({err}); pass weights written by freqkit train") from None
    if "config" not in meta:
        return {}
    try:
        return loads_json(meta["config"], f"the training config in {path}'s metadata")
    except json.JSONDecodeError:
        raise FreqkitError(f"{path} has a damaged training config in its metadata; pass model=... and data=...") from None


def read_run(path: Union[str, Path]) -> dict[str, Any]:
    """What a run folder, a checkpoint folder or a ``.safetensors`` file holds: {path, weights, config, metrics, history, timing}."""
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        if (path / "config.json").is_file():
            cfg = read_json(path / "config.json", _FIX)
        elif (path / "state.json").is_file():
            cfg = read_json(path / "state.json", "the checkpoint state").get("config", {})
        else:
            cfg = {}
        if not weights.is_file():
            raise FreqkitError(f"{path} has no model.safetensors (it may still be training); pass a finished run folder")
        if not cfg:
            cfg = _safetensors_config(weights)
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise FreqkitError(
                f"{path} is not a .safetensors file; pass a run folder, a checkpoint folder or weights written by freqkit train"
            )
        weights, cfg = path, _safetensors_config(path)
        if not cfg and (path.parent / "config.json").is_file():
            cfg = read_json(path.parent / "config.json", _FIX)
    else:
        raise FreqkitError(f"{path} does not exist; pass a run folder, a checkpoint folder or a .safetensors file")
    if not isinstance(cfg, dict):
        raise FreqkitError(f"{path}: the training config is not a JSON object; restore config.json or re-run freqkit train")
    folder = RunDir(weights.parent)
    metrics = read_json(folder.metrics_file, "the metrics file") if folder.metrics_file.is_file() else {}
    history = train_history(folder.path)
    if folder.timing_file.is_file():
        timing = read_json(folder.timing_file, "the timing file")
    else:  # runs written without timing.json: per-step time from the logged throughput
        rates = [
            cfg["global_batch_size"] / h["img_per_s"] for h in history[1:] if h.get("img_per_s") and cfg.get("global_batch_size")
        ]
        per_step = statistics.median(rates) if rates else float("nan")
        timing = {"seconds": per_step * cfg.get("steps", 0), "seconds_per_step": per_step}
    return {"path": path, "weights": weights, "config": cfg, "metrics": metrics, "history": history, "timing": timing}


def train_history(folder: Union[str, Path]) -> list[dict[str, Any]]:
    """The training records of ``folder/log.jsonl`` from step 1, resumed runs included (empty without a log)."""
    return [rec for rec in RunDir(folder).records() if rec.get("split") == "train"]


def build_run_model(
    config: dict[str, Any], weights: Union[str, Path], spec: Optional[str] = None, device: Any = None
) -> nn.Module:
    """The network a run's ``config`` describes (classifier or segmenter) with ``weights`` loaded, in eval mode."""
    from freqkit.models.checkpoint import load_checkpoint
    from freqkit.models.spec import build_model

    spec = spec or config.get("model")
    if spec is None:
        raise FreqkitError(f"{weights} carries no training config; pass the model spec (model=...) to say what it is")
    missing = [k for k in ("task", "num_classes", "img_size") if config.get(k) is None]
    if missing:
        raise FreqkitError(
            f"{Path(weights).parent} does not record {', '.join(missing)}; open a run folder written by freqkit train"
        )
    seg = {}
    if config["task"] == "segmentation":
        seg = dict(
            head_norm=config.get("head_norm", "group"),
            head_dropout=float(config.get("head_dropout", 0.0)),
            aux_channels=int(config.get("aux_channels", 0)),
            aux_level=int(config.get("aux_level", 2)),
            neck=config.get("neck", "pyramid"),
            head_init=config.get("head_init", "torch"),
        )
    net = build_model(
        spec, config["task"], config["num_classes"], config["img_size"], head_channels=int(config.get("head_channels", 64)), **seg
    )
    load_checkpoint(net, str(weights))
    if device is not None:
        net = net.to(device)
    return net.eval()
