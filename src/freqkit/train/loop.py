"""The training and evaluation loops, single process or under torchrun (DistributedDataParallel).

``train(TrainConfig(...))`` builds the data and the model, trains with AdamW (warmup + cosine or
poly, layer-wise lr decay, FreqScale lr multiplier, gradient clipping, optional bf16 autocast),
evaluates, logs JSON lines to ``<out>/log.jsonl`` and checkpoints to ``<out>/checkpoint``. The data
stream and the lr are functions of the step, and the checkpoint holds every optimizer and RNG
state, so a run stopped at any step and resumed (``resume=True``) ends with the same weights as an
uninterrupted one.

Outputs in ``<out>``: ``model.safetensors`` + ``config.json`` (the final model, for ``freqkit eval``),
``metrics.json``, ``log.jsonl``, ``checkpoint/``.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from freqkit.errors import FreqkitError
from freqkit.train.checkpoint import load_train_state, save_model_file, save_train_state, unwrap
from freqkit.train.config import RESUME_SENSITIVE, TrainConfig
from freqkit.train.distributed import DistInfo, ResumableDistributedSampler, cleanup_distributed, init_distributed, is_main
from freqkit.train.metrics import IGNORE_INDEX, build_metrics
from freqkit.train.optim import build_optimizer, lr_factor, set_lr

__all__ = ["train", "evaluate", "TrainResult", "input_stats", "normalize", "seed_everything", "amp_enabled"]


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained (unwrapped) model, its metrics and timings."""

    model: nn.Module
    metrics: dict[str, float]
    config: TrainConfig
    out: Path
    task: str
    num_classes: int
    img_size: int
    steps_done: int
    seconds: float
    seconds_per_step: float
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed torch, Python and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def amp_enabled(amp: Optional[bool], device: torch.device) -> bool:
    """bf16 autocast on? None means: on for CUDA with bf16 support, off on CPU (supported but slow there)."""
    if amp is None:
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(amp)


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel that ``model`` expects, from its timm ``pretrained_cfg`` (ImageNet's if none)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    m = unwrap(model)
    for candidate in (m, getattr(m, "encoder", None)):
        cfg = getattr(candidate, "pretrained_cfg", None)
        if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
            return tuple(cfg["mean"]), tuple(cfg["std"])
    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> (x - mean) / std per channel."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / s


class _ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``, in order, no padding (evaluation shards)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.dim() == 4 and not (target != IGNORE_INDEX).any():
        return logits.float().sum() * 0.0  # an all-ignore batch: no signal, but keep the graph (DDP)
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    task: str,
    num_classes: int,
    device: Optional[torch.device] = None,
    batch_size: int = 32,
    amp: bool = False,
    dist_info: Optional[DistInfo] = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (items (3, H, W) in [0, 1] + target): top1, or miou / pixel_acc / boundary_f1, and loss.

    Under DDP each process evaluates a shard and torchmetrics sums the statistics over processes.
    """
    from tqdm.auto import tqdm

    net = unwrap(model)
    device = device or next(net.parameters()).device
    if isinstance(data, DataLoader):
        loader = data
    else:
        if len(data) == 0:
            raise FreqkitError("the evaluation split is empty; add validation images")
        rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
        # a private generator: evaluating must not draw from the global RNG (training streams stay reproducible)
        loader = DataLoader(data, batch_size=batch_size, sampler=_ShardSampler(len(data), rank, world), generator=torch.Generator())
    mean, std = input_stats(net)
    metrics = build_metrics(task, num_classes).to(device)
    was_training = net.training
    net.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for x, y in tqdm(loader, desc="eval", leave=False, disable=not (progress and is_main(dist_info))):
            x, y = x.to(device), torch.as_tensor(y).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(normalize(x, mean, std))
            logits = logits.float()
            if logits.shape[1] != num_classes:
                raise FreqkitError(
                    f"the model predicts {logits.shape[1]} classes but the data has {num_classes}; use a model trained on this data"
                )
            metrics.update(logits, y)
            loss_sum += _loss(logits, y).double() * x.shape[0]
            count += x.shape[0]
    finally:
        net.train(was_training)
    if dist_info is not None and dist_info.distributed:
        import torch.distributed as dist

        dist.all_reduce(loss_sum)
        dist.all_reduce(count)
    out = {k: float(v) for k, v in metrics.compute().items()}
    out["loss"] = float(loss_sum / count.clamp_min(1))
    return out


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, folder: Path) -> None:
    diffs = [k for k in RESUME_SENSITIVE if saved.get(k) != getattr(cfg, k)]
    if diffs:
        k = diffs[0]
        raise FreqkitError(
            f"cannot resume from {folder}: it was trained with {k}={saved.get(k)!r}, this run has {k}={getattr(cfg, k)!r}; "
            "resume with the original settings or use a new --out"
        )


def _write_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def train(
    config: Optional[TrainConfig] = None,
    model: Optional[nn.Module] = None,
    datasets: Optional[dict[str, Dataset]] = None,
    **options: Any,
) -> TrainResult:
    """Train (and evaluate) one model as ``config`` says; works alone or as one process of a torchrun job.

    ``config`` is a :class:`TrainConfig` (or ``None``: its defaults); ``options`` override its fields, as in
    ``freqkit.train(model_cfg, lr=3e-4)`` or ``freqkit.train(model="vit_mini+fdam", steps=50)``. ``model``: your own
    network (classifier, or segmenter returning (B, K, H, W) logits) instead of building ``config.model``, which
    then only names it. ``datasets``: ``{"train": Dataset, "val": Dataset}`` (items: image (3, H, W) in [0, 1] and
    an int class or a (H, W) long mask) instead of ``config.data``; ``config.task`` and ``config.num_classes`` are
    required then.
    """
    import dataclasses

    from freqkit.errors import ParameterError

    if isinstance(model, str):  # train(model="vit_mini+fdam"): a spec, i.e. a config field
        options["model"], model = model, None
    base = config if config is not None else TrainConfig()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in options:
        if key not in known:
            raise ParameterError(key, f"is not a TrainConfig field; use one of {', '.join(sorted(known))}")
    cfg = dataclasses.replace(TrainConfig.from_dict(base.to_dict()), **options).validate()
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info, model, datasets)
    finally:
        cleanup_distributed(info)


def _given_datasets(datasets: dict[str, Dataset], cfg: TrainConfig):
    """The caller's datasets and their DataInfo (task and class count from ``cfg``, size from the first image)."""
    from freqkit.data.spec import DataInfo
    from freqkit.errors import ParameterError

    if not isinstance(datasets, dict) or not {"train", "val"} <= set(datasets):
        raise ParameterError("datasets", "must be a dict with 'train' and 'val' datasets")
    if cfg.task is None or cfg.num_classes is None:
        raise ParameterError("task", "and num_classes must be set in the config when you pass your own datasets")
    first = datasets["train"][0][0]
    if not (torch.is_tensor(first) and first.dim() == 3 and first.shape[0] == 3):
        raise ParameterError("datasets", f"items must be (image (3, H, W) tensor in [0, 1], target); got an image of shape {tuple(getattr(first, 'shape', ()))}")
    return datasets, DataInfo(name=cfg.data, task=cfg.task, num_classes=cfg.num_classes, img_size=int(first.shape[-1]), classes=())


def _train(cfg: TrainConfig, info: DistInfo, net: Optional[nn.Module] = None, given: Optional[dict[str, Dataset]] = None) -> TrainResult:
    from tqdm.auto import tqdm

    from freqkit.data import build_datasets
    from freqkit.train.models import build_model

    t_start = time.perf_counter()
    device = info.device
    cfg.global_batch_size = cfg.batch_size * info.world_size
    out = Path(cfg.out)
    main = is_main(info)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if given is None:
        datasets, data_info = build_datasets(cfg.data, task=cfg.task, img_size=cfg.img_size, num_classes=cfg.num_classes, seed=cfg.seed)
    else:
        datasets, data_info = _given_datasets(given, cfg)
    cfg.task, cfg.img_size, cfg.num_classes = data_info.task, data_info.img_size, data_info.num_classes
    train_ds, val_ds = datasets["train"], datasets["val"]
    if len(train_ds) < cfg.global_batch_size:
        raise FreqkitError(
            f"the training split has {len(train_ds)} images, fewer than one global batch ({cfg.global_batch_size}); "
            "lower --batch-size or add images"
        )
    if net is None:
        net = build_model(cfg.model, cfg.task, cfg.num_classes, cfg.img_size, cfg.drop_path, cfg.head_channels)
    model = net.to(device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.freq_lr_mult)
    amp = amp_enabled(cfg.amp, device)
    mean, std = input_stats(model)

    start = 0
    ckpt_dir = out / "checkpoint"
    log_path = out / "log.jsonl"
    if cfg.resume and (ckpt_dir / "state.json").is_file():
        saved = json.loads((ckpt_dir / "state.json").read_text())
        _check_resume(saved.get("config", {}), cfg, ckpt_dir)
        load_train_state(ckpt_dir, model, optimizer)
        start = int(saved["step"])
    elif main and log_path.exists():
        log_path.unlink()

    ddp_model: nn.Module = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device] if device.type == "cuda" else None)

    sampler = ResumableDistributedSampler(train_ds, cfg.batch_size, info.world_size, info.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(
        train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=True,
        pin_memory=device.type == "cuda",
        # its own generator: creating an iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    per_epoch = sampler.batches_per_epoch
    end = cfg.stop_at if cfg.stop_at is not None else cfg.steps
    history: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}

    def save(step: int) -> None:
        if main:
            save_train_state(ckpt_dir, model, optimizer, step, cfg.to_dict(), extra={"metrics": metrics})
        if info.distributed:
            torch.distributed.barrier()

    def run_eval(step: int) -> dict[str, float]:
        res = evaluate(model, val_ds, cfg.task, cfg.num_classes, device, cfg.eval_batch_size or cfg.batch_size, amp, info)
        if main:
            rec = {"step": step, "split": "val", **res}
            _write_jsonl(log_path, rec)
            history.append(rec)
        return res

    bar = tqdm(total=end, initial=start, desc=f"train {cfg.model}", disable=not (cfg.progress and main), dynamic_ncols=True)
    ddp_model.train()
    it = None
    t_loop = time.perf_counter()
    window_t, window_n = time.perf_counter(), 0
    for step in range(start, end):
        if it is None or step % per_epoch == 0:
            epoch, within = divmod(step, per_epoch)
            sampler.set_epoch(epoch, within)
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch)
            it = iter(loader)
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        set_lr(optimizer, lr_factor(step, cfg.steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = ddp_model(normalize(x, mean, std))
        loss = _loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if cfg.clip_grad:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        window_n += 1
        done = step + 1
        if cfg.log_every and (done % cfg.log_every == 0 or done == end):
            loss_v = loss.detach().clone()
            if info.distributed:
                torch.distributed.all_reduce(loss_v)
                loss_v /= info.world_size
            now = time.perf_counter()
            rec = {
                "step": done, "split": "train", "loss": float(loss_v), "lr": optimizer.param_groups[-1]["lr"],
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "img_per_s": window_n * cfg.global_batch_size / max(now - window_t, 1e-9),
            }
            window_t, window_n = now, 0
            if not math.isfinite(rec["loss"]):
                raise FreqkitError(f"the loss became {rec['loss']} at step {done}; lower --lr or enable --clip-grad")
            if main:
                _write_jsonl(log_path, rec)
                history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
        bar.update(1)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            metrics = run_eval(done)
        if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == end:
            if done == cfg.steps:
                metrics = run_eval(done)
            save(done)
    bar.close()
    loop_seconds = time.perf_counter() - t_loop
    steps_run = max(0, end - start)
    if start >= end and end == cfg.steps:
        metrics = run_eval(end)  # resumed a finished run: report its metrics again
    if main and end == cfg.steps:
        meta = {"config": json.dumps(cfg.to_dict())}
        save_model_file(model, out / "model.safetensors", metadata=meta)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return TrainResult(
        model=model, metrics=metrics, config=cfg, out=out, task=cfg.task, num_classes=cfg.num_classes,
        img_size=cfg.img_size, steps_done=end, seconds=time.perf_counter() - t_start,
        seconds_per_step=loop_seconds / steps_run if steps_run else float("nan"), history=history,
    )
