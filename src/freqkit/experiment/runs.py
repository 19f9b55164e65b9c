"""Finished training runs: :func:`open_run` reads what ``freqkit train`` wrote, :func:`evaluate_run` scores it.

A run folder holds ``model.safetensors`` (with the training config in its metadata), ``config.json``,
``metrics.json``, ``log.jsonl``, ``timing.json`` and ``checkpoint/``; a checkpoint folder or a bare
weights file can be opened too. The folder's layout belongs to :mod:`freqkit.train.rundir`, which this
module reads through; evaluation is :mod:`freqkit.train.evaluate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from freqkit.errors import FreqkitError

__all__ = ["Run", "open_run", "evaluate_run", "EVALUATE_HELP"]


def _field_help(name: str) -> str:
    from freqkit.train.config import TrainConfig

    return TrainConfig.__dataclass_fields__[name].metadata["help"]


# help of each evaluate_run option (the ``freqkit eval`` flags are generated from the signature and these)
EVALUATE_HELP = {
    "data": _field_help("data") + "; None: the data it was trained on",
    "model": _field_help("model") + "; needed only for weights without a recorded config",
    "task": "classification or segmentation; needed only with model",
    "img_size": "image size; None: the training size",
    "batch_size": "images per batch",
    "amp": "bf16 autocast (auto: on for CUDA)",
    "device": "cpu, cuda, cuda:1 ... (auto: cuda if available)",
    "progress": "progress bar",
    "eval_mode": _field_help("eval_mode") + "; None: the run's",
    "eval_flip": _field_help("eval_flip") + " (auto: the run's)",
    "eval_scales": _field_help("eval_scales"),
    "save_predictions": "folder receiving one PNG label map per validation image at its original size, in the dataset's raw "
    "labels (ADE20K: class + 1), the format benchmark servers take",
}


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
        from freqkit.train.rundir import build_run_model

        return build_run_model(self.config, self.weights, spec, device)

    def to_dict(self) -> dict[str, Any]:
        """Every recorded number and setting (not the weights): path, config, metrics, history, timing."""
        return {
            "path": str(self.path),
            "weights": str(self.weights),
            "config": self.config,
            "metrics": self.metrics,
            "history": self.history,
            "timing": self.timing,
        }

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """:meth:`to_dict` as JSON text; with ``path`` also written there (atomically)."""
        from freqkit.io import json_text

        return json_text(self.to_dict(), path)

    def save(self, folder: Union[str, Path]) -> Path:
        """Copy the run into ``folder`` as a run folder (weights, config, metrics, timing, log) and return it; :func:`open_run` loads it."""
        import shutil

        from freqkit.io import atomic_write_json, check_writable_dir
        from freqkit.train.rundir import RunDir

        dest = RunDir(check_writable_dir(folder, "folder"))
        if Path(self.weights).resolve() != dest.weights.resolve():
            tmp = dest.weights.with_name(dest.weights.name + ".tmp")
            shutil.copyfile(self.weights, tmp)
            tmp.replace(dest.weights)  # atomic: a reader never sees half a weights file
        atomic_write_json(dest.config_file, self.config)
        dest.save_metrics(self.metrics)
        dest.save_timing(
            float(self.timing.get("seconds", float("nan"))), float(self.timing.get("seconds_per_step", float("nan")))
        )
        src = RunDir(Path(self.weights).parent)
        if src.log_file.resolve() != dest.log_file.resolve():
            dest.clear_log()
            for rec in src.records():
                dest.log(rec)
        return dest.path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "Run":
        """The run in ``folder`` (what :meth:`save` wrote): :func:`open_run`."""
        return open_run(folder)

    def table(self) -> str:
        """The recorded metrics, one per line."""
        return "\n".join(f"{k:<14}{v:.4f}" for k, v in self.metrics.items() if isinstance(v, (int, float)))

    def plot(self) -> dict[str, Any]:
        """Matplotlib figures by file stem: ``loss`` (training loss against the step)."""
        from freqkit.render import curve_figure

        curve = ([h["step"] for h in self.history], [h["loss"] for h in self.history])
        return {"loss": curve_figure({str(self.spec): curve}, "step", "training loss")}

    def _repr_html_(self) -> str:
        from freqkit import render

        facts = {
            "path": self.path,
            "model": self.spec,
            "data": self.config.get("data"),
            "steps": self.config.get("steps"),
            **{k: f"{v:.4f}" for k, v in self.metrics.items() if isinstance(v, (int, float))},
        }
        return render.fragment(f"Run: {self.spec}", render.kv_table(facts), self.plot() if self.history else {})


def open_run(path: Union[str, Path]) -> Run:
    """Open a run folder, a checkpoint folder or a ``.safetensors`` weights file written by ``freqkit train``."""
    from freqkit.train.rundir import read_run

    return Run(**read_run(path))


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
    evaluate at each image's original size (:func:`freqkit.train.evaluate.evaluate_dense`), as do runs trained
    with ``crop_size``; ``save_predictions`` (a folder) receives one PNG label map per validation image at its
    original size in the dataset's raw convention (ADE20K: class + 1, 0 unused), as benchmark servers take them.
    """
    from freqkit.data import build_datasets
    from freqkit.errors import ParameterError
    from freqkit.models.spec import parse_model_spec
    from freqkit.train.distributed import cleanup_distributed, init_distributed
    from freqkit.train.evaluate import eval_options, evaluate, evaluate_dense
    from freqkit.train.setup import amp_enabled

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
        splits, data_info = build_datasets(
            data,
            task=task or r.config.get("task"),
            img_size=None if crop else size,
            num_classes=r.config.get("num_classes"),
            splits=("val",),
            crop_size=crop,
            img_scale=run_cfg.scale,
        )
        cfg = {**r.config, "task": data_info.task, "num_classes": data_info.num_classes, "img_size": data_info.img_size}
        net = Run(r.path, r.weights, cfg).model(spec, device=info.device)
        if dense is not None:
            metrics = evaluate_dense(
                net,
                splits["val"],
                data_info.num_classes,
                info.device,
                amp=amp_enabled(amp, info.device),
                dist_info=info,
                progress=progress,
                save_predictions=save_predictions,
                **dense,
            )
        else:
            metrics = evaluate(
                net,
                splits["val"],
                data_info.task,
                data_info.num_classes,
                info.device,
                batch_size,
                amp_enabled(amp, info.device),
                info,
                progress=progress,
            )
    finally:
        cleanup_distributed(info)
    return {"model": spec, "data": data, "images": len(splits["val"]), **metrics}
