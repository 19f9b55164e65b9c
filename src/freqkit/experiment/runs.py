"""Finished training runs: :func:`open_run` reads what ``freqkit train`` wrote, :func:`evaluate_run` scores it.

A run folder holds ``model.safetensors`` (with the training config in its metadata), ``config.json``,
``metrics.json``, ``log.jsonl``, ``timing.json`` and ``checkpoint/``; a checkpoint folder or a bare
weights file can be opened too. ``eval`` and ``compare`` both go through :func:`open_run`.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from freqkit.errors import FreqkitError
from freqkit.limits import loads_json

__all__ = ["Run", "open_run", "evaluate_run", "train_history"]


def _read_json(path: Path, what: str) -> Any:
    from freqkit.io import read_json

    return read_json(path, what)


@dataclass
class Run:
    """A finished (or checkpointed) run: its config, weights file, metrics, training history and timing."""

    path: Path
    weights: Path
    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> Optional[str]:
        """The model spec it was trained as (``vit_mini+fdam``), if recorded."""
        return self.config.get("model")

    def model(self, spec: Optional[str] = None, device: Any = None):
        """The trained network (classifier or segmenter) with the run's weights loaded, in eval mode."""
        from freqkit.models.checkpoint import load_checkpoint
        from freqkit.train.models import build_model

        spec = spec or self.spec
        if spec is None:
            raise FreqkitError(f"{self.weights} carries no training config; pass the model spec (model=...) to say what it is")
        missing = [k for k in ("task", "num_classes", "img_size") if self.config.get(k) is None]
        if missing:
            raise FreqkitError(f"{self.path} does not record {', '.join(missing)}; open a run folder written by freqkit train")
        seg = {}
        if self.config["task"] == "segmentation":
            seg = dict(head_norm=self.config.get("head_norm", "group"), head_dropout=float(self.config.get("head_dropout", 0.0)),
                       aux_channels=int(self.config.get("aux_channels", 0)))
        net = build_model(spec, self.config["task"], self.config["num_classes"], self.config["img_size"],
                          head_channels=int(self.config.get("head_channels", 64)), **seg)
        load_checkpoint(net, str(self.weights))
        if device is not None:
            net = net.to(device)
        return net.eval()


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


def train_history(folder: Union[str, Path]) -> list[dict[str, Any]]:
    """The training records of ``folder/log.jsonl`` from step 1, resumed runs included (empty without a log)."""
    log = Path(folder) / "log.jsonl"
    history: list[dict[str, Any]] = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            try:
                rec = loads_json(line, "a log line")
            except ValueError:  # FreqkitError (too deep) is a ValueError too
                continue  # a line cut by a kill: the records before it still stand
            if isinstance(rec, dict) and rec.get("split") == "train":
                history.append(rec)
    return history


def open_run(path: Union[str, Path]) -> Run:
    """Open a run folder, a checkpoint folder or a ``.safetensors`` weights file written by ``freqkit train``."""
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        if (path / "config.json").is_file():
            cfg = _read_json(path / "config.json", "the training config")
        elif (path / "state.json").is_file():
            cfg = _read_json(path / "state.json", "the checkpoint state").get("config", {})
        else:
            cfg = {}
        if not weights.is_file():
            raise FreqkitError(f"{path} has no model.safetensors (it may still be training); pass a finished run folder")
        if not cfg:
            cfg = _safetensors_config(weights)
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise FreqkitError(f"{path} is not a .safetensors file; pass a run folder, a checkpoint folder or weights written by freqkit train")
        weights, cfg = path, _safetensors_config(path)
        if not cfg and (path.parent / "config.json").is_file():
            cfg = _read_json(path.parent / "config.json", "the training config")
    else:
        raise FreqkitError(f"{path} does not exist; pass a run folder, a checkpoint folder or a .safetensors file")
    if not isinstance(cfg, dict):
        raise FreqkitError(f"{path}: the training config is not a JSON object; restore config.json or re-run freqkit train")
    folder = weights.parent
    metrics = _read_json(folder / "metrics.json", "the metrics file") if (folder / "metrics.json").is_file() else {}
    history = train_history(folder)
    if (folder / "timing.json").is_file():
        timing = _read_json(folder / "timing.json", "the timing file")
    else:  # runs written without timing.json: per-step time from the logged throughput
        rates = [cfg["global_batch_size"] / h["img_per_s"] for h in history[1:] if h.get("img_per_s") and cfg.get("global_batch_size")]
        per_step = statistics.median(rates) if rates else float("nan")
        timing = {"seconds": per_step * cfg.get("steps", 0), "seconds_per_step": per_step}
    return Run(path=path, weights=weights, config=cfg, metrics=metrics, history=history, timing=timing)


def evaluate_run(
    run: Union[str, Path, Run],
    data: Optional[str] = None,
    *,
    model: Optional[str] = None,
    task: Optional[str] = None,
    img_size: Optional[int] = None,
    batch_size: int = 32,
    amp: Optional[bool] = None,
    device: str = "auto",
    progress: bool = False,
    eval_mode: Optional[str] = None,
    eval_flip: Optional[bool] = None,
    eval_scales: Optional[str] = None,
    save_predictions: Optional[Union[str, Path]] = None,
) -> dict[str, Any]:
    """Metrics of a finished run on the validation split of ``data`` (default: its training data).

    Returns ``{"model", "data", "images", **metrics}``. ``model`` (a spec) is needed only for weights
    without a recorded config; a different dataset keeps the model's class count (checked against the data).
    Segmentation: ``eval_mode`` ('whole' / 'slide'), ``eval_flip`` and ``eval_scales`` (default: the run's)
    evaluate at each image's original size (:func:`freqkit.train.seg_eval.evaluate_dense`), as do runs trained
    with ``crop_size``; ``save_predictions`` (a folder) receives one PNG label map per validation image at its
    original size in the dataset's raw convention (ADE20K: class + 1, 0 unused), as benchmark servers take them.
    """
    from freqkit.data import build_datasets
    from freqkit.errors import ParameterError
    from freqkit.train.distributed import cleanup_distributed, init_distributed
    from freqkit.train.loop import amp_enabled, evaluate
    from freqkit.train.models import parse_model_spec

    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    r = run if isinstance(run, Run) else open_run(run)
    spec = model or r.spec
    if spec is None:
        raise ParameterError("model", f"is needed: {r.weights} carries no training config; pass the model spec")
    data = data or r.config.get("data")
    if data is None:
        raise ParameterError("data", "is needed: the weights carry no training config")
    parse_model_spec(spec)
    from freqkit.data.spec import parse_data_spec
    from freqkit.train.config import TrainConfig
    from freqkit.train.loop import eval_options

    over = {k: v for k, v in (("eval_mode", eval_mode), ("eval_flip", eval_flip), ("eval_scales", eval_scales)) if v is not None}
    if save_predictions is not None and not (eval_mode or r.config.get("eval_mode") or r.config.get("crop_size")):
        over["eval_mode"] = "whole"  # predictions are saved at the original image size
    run_cfg = TrainConfig.from_dict({**r.config, **over})
    try:
        run_cfg.validate()
    except FreqkitError as err:
        if over:
            raise
        del err  # an old run's config: only the evaluation fields matter here
    dense = eval_options(run_cfg)
    kind = parse_data_spec(data).kind
    if dense is not None and (task or r.config.get("task")) == "classification":
        raise ParameterError("eval_mode", "applies to segmentation runs only")
    if save_predictions is not None and dense is None:
        raise ParameterError("save_predictions", "needs a segmentation run")
    size = img_size or r.config.get("img_size")
    # folder data evaluated densely: validation items at their original size (the crop size only sizes the model)
    crop = (run_cfg.crop_size or size) if (dense is not None and kind in ("ade20k", "pairs")) else None
    info = init_distributed(device)
    try:
        splits, data_info = build_datasets(data, task=task or r.config.get("task"), img_size=None if crop else size,
                                           num_classes=r.config.get("num_classes"), splits=("val",), crop_size=crop,
                                           img_scale=run_cfg.scale)
        cfg = {**r.config, "task": data_info.task, "num_classes": data_info.num_classes, "img_size": data_info.img_size}
        net = Run(r.path, r.weights, cfg).model(spec, device=info.device)
        if dense is not None:
            from freqkit.train.seg_eval import evaluate_dense

            metrics = evaluate_dense(net, splits["val"], data_info.num_classes, info.device, amp=amp_enabled(amp, info.device),
                                     dist_info=info, progress=progress, save_predictions=save_predictions, **dense)
        else:
            metrics = evaluate(net, splits["val"], data_info.task, data_info.num_classes, info.device, batch_size,
                               amp_enabled(amp, info.device), info, progress=progress)
    finally:
        cleanup_distributed(info)
    return {"model": spec, "data": data, "images": len(splits["val"]), **metrics}
