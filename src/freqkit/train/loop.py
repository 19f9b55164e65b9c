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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from freqkit.errors import FreqkitError, ParameterError
from freqkit.io import RunLock, atomic_write_json, atomic_write_text, check_writable_dir
from freqkit.limits import loads_json
from freqkit.ranks import peer_failure, publish_failure
from freqkit.train.checkpoint import find_checkpoint, load_train_state, save_model_file, save_train_state, settle_checkpoint, unwrap
from freqkit.train.config import RESUME_SENSITIVE, TrainConfig
from freqkit.train.distributed import DistInfo, ResumableDistributedSampler, cleanup_distributed, init_distributed, is_main
from freqkit.train.metrics import IGNORE_INDEX, build_metrics, check_num_classes
from freqkit.train.optim import build_optimizer, lr_factor, set_lr

__all__ = [
    "train", "evaluate", "preflight", "TrainResult", "input_stats", "normalize", "seed_everything", "amp_enabled", "check_input_size",
]


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


def _one_line(err: FreqkitError) -> FreqkitError:
    """A FreqkitError re-raised by a DataLoader worker carries the worker's traceback: keep its last line."""
    text = str(err)
    if "\n" not in text:
        return err
    last = text.strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return type(err)(last[len(prefix):] if last.startswith(prefix) else last)


def _batches(loader):
    """Iterate ``loader``; a FreqkitError from a worker process comes out as its one line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except FreqkitError as err:
            raise _one_line(err) from None
        yield batch


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

    if int(batch_size) < 1:
        raise FreqkitError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_classes) < 1:
        raise FreqkitError(f"num_classes must be >= 1, got {num_classes}")
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
        for x, y in tqdm(_batches(loader), total=len(loader), desc="eval", leave=False, disable=not (progress and is_main(dist_info))):
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
    return finish_metrics(metrics, loss_sum, count, dist_info)


def finish_metrics(metrics: Any, loss_sum: torch.Tensor, count: torch.Tensor, dist_info: Optional[DistInfo]) -> dict[str, float]:
    """The metric values and the mean loss, summed over processes under DDP (torchmetrics syncs its own states)."""
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
            "resume with the original settings or use a new out folder"
        )


def _data_identity(train_ds: Dataset, val_ds: Dataset) -> dict[str, Any]:
    """What the data is, beyond its spec string: a digest of each folder split's files (names and sizes) and its length."""
    from freqkit.data.folders import dataset_digest

    return {split: {"files": dataset_digest(ds), "items": len(ds)} for split, ds in (("train", train_ds), ("val", val_ds))}


def _check_same_data(saved: Optional[dict[str, Any]], now: dict[str, Any], folder: Path) -> None:
    """Refuse to resume on data that changed since the checkpoint (renamed, added, removed or resized files)."""
    if not isinstance(saved, dict):
        return  # a checkpoint written before data identities were recorded
    for split in ("train", "val"):
        a, b = saved.get(split) or {}, now[split]
        if a != b:
            what = (f"{a.get('items')} -> {b['items']} items" if a.get("items") != b["items"]
                    else "files renamed, replaced or resized")
            raise FreqkitError(
                f"cannot resume from {folder}: the {split} data changed since it was saved ({what}); "
                "resume on the same data, or use a new out folder"
            )


def _finite_step(loss: torch.Tensor, model: nn.Module, grad_norm: Optional[torch.Tensor], info: DistInfo) -> bool:
    """True when the loss and every gradient are finite, on every rank (they agree, so all update or all skip)."""
    if grad_norm is None:
        # an infinite max_norm never scales: this only measures the gradient norm (NaN / inf when any gradient is)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    ok = (torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)).to(torch.float32).reshape(1)
    if info.distributed:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item() > 0)


def _check_finite_weights(model: nn.Module, step: int) -> None:
    """Refuse to save non-finite weights (a step past the loss check made them, e.g. an overflowing update)."""
    bad = [name for name, p in unwrap(model).named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise FreqkitError(
            f"training diverged by step {step}: {len(bad)} weight tensors hold NaN or inf (first: {bad[0]}); nothing was saved; "
            "lower lr or set clip_grad"
        )


def _check_fresh_out(out: Path) -> None:
    """A folder that holds a run (its model, checkpoint or log) is not started over unless overwrite or resume says so."""
    held = [n for n in ("model.safetensors", "metrics.json", "checkpoint", "checkpoint.old", "log.jsonl") if (out / n).exists()]
    if held:
        raise ParameterError(
            "out", f"{str(out)!r} already holds a run ({', '.join(held)}); pass resume=True to continue it, overwrite=True "
            "to start it again (its log and checkpoint are replaced), or use a new out folder"
        )


def _write_jsonl(path: Path, record: dict[str, Any]) -> None:
    # an append-only log: a kill can leave at most a partial last line, which _truncate_log drops on resume
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int, finished: bool) -> None:
    """Keep the log records up to the resumed checkpoint's ``step``; drop partial lines and records the resumed run repeats.

    Evaluations at a checkpoint's step ran before it was saved and are kept, except the final one
    (``finished``: it runs after the last save, and runs again).
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = loads_json(line, "a log line")
        except ValueError:  # a partial line, or one nested past the bound (FreqkitError is a ValueError)
            continue
        if not (isinstance(rec, dict) and isinstance(rec.get("step"), int)) or rec["step"] > step:
            continue
        if finished and rec["step"] == step and rec.get("split") == "val":
            continue
        kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def check_input_size(model: nn.Module, img_size: int, spec: str, device: torch.device) -> None:
    """Run one (1, 3, S, S) image through ``model`` (no grad, eval mode) so a size the model cannot take fails now, in one line."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=device))
    except (RuntimeError, ValueError, AssertionError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        patch = getattr(getattr(unwrap(model), "patch_embed", None) or getattr(getattr(unwrap(model), "encoder", None), "patch_embed", None), "patch_size", None)
        hint = f" (patch size {patch[0] if isinstance(patch, (tuple, list)) else patch})" if patch is not None else ""
        raise FreqkitError(
            f"model {spec} cannot take {img_size}x{img_size} images{hint}: {first}; use an img_size that is a multiple of 32"
        ) from None
    finally:
        model.train(was_training)


def _build_data(cfg: TrainConfig, splits: tuple[str, ...] = ("train", "val")):
    """build_datasets for ``cfg`` (the paper pipeline when crop_size is set)."""
    from freqkit.data import build_datasets

    return build_datasets(cfg.data, task=cfg.task, img_size=cfg.img_size, num_classes=cfg.num_classes, seed=cfg.seed,
                          splits=splits, crop_size=cfg.crop_size, img_scale=cfg.scale)


def _build_model(cfg: TrainConfig, task: str, num_classes: int, img_size: int) -> nn.Module:
    """build_model with every head setting of ``cfg``."""
    from freqkit.train.models import build_model

    kw = {}
    if task == "segmentation":
        kw = dict(head_norm=cfg.head_norm, head_dropout=cfg.head_dropout, aux_channels=cfg.aux_channels)
    return build_model(cfg.model, task, num_classes, img_size, cfg.drop_path, cfg.head_channels, **kw)


def eval_options(cfg: TrainConfig | dict[str, Any]) -> Optional[dict[str, Any]]:
    """Keyword arguments of :func:`freqkit.train.seg_eval.evaluate_dense` from a config, or None for fixed-size batches."""
    from freqkit.train.seg_eval import parse_scales

    c = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    mode = c.eval_mode or ("whole" if c.crop_size else None)
    if mode is None:
        return None
    crop = int(c.crop_size or c.img_size or 512)
    return dict(mode=mode, scale=c.scale or (4 * crop, crop), crop=crop, flip=bool(c.eval_flip), scales=parse_scales(c.eval_scales))


def preflight(configs: Sequence[TrainConfig], check_data: bool = True) -> list[TrainConfig]:
    """Check a batch of runs (e.g. every model x seed of a comparison) before any of them trains; return them validated.

    For each config: its settings and device, that ``out`` is a writable folder, and that its model spec
    builds for the data's task, class count and image size and takes one image of that size. Each
    dataset is built (and with ``check_data`` its validation split read) once. The first problem
    raises one FreqkitError, so a bad third model fails in seconds, not after the first two trained.
    """
    checked = []
    infos: dict[tuple[Any, ...], Any] = {}
    for config in configs:
        cfg = TrainConfig.from_dict(config.to_dict()).validate()
        check_writable_dir(cfg.out, "out")
        key = (cfg.data, cfg.task, cfg.img_size, cfg.num_classes, cfg.crop_size, cfg.scale)
        if key not in infos:
            datasets, infos[key] = _build_data(cfg)
            check = getattr(datasets["val"], "check", None)
            if check_data and check is not None:
                check(decode=True)
        info = infos[key]
        model = _build_model(cfg, info.task, info.num_classes, info.img_size)
        check_input_size(model, info.img_size, cfg.model, torch.device("cpu"))
        del model
        checked.append(cfg)
    return checked


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

    Before any training: the settings are checked, ``out`` is proven writable and locked against other
    runs (rank 0), the model is built and fed one image of the chosen size, and every validation item is
    read and checked (labels in range), so bad input fails in seconds with one line.
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
    lock: Optional[RunLock] = None
    failed = True
    try:
        if is_main(info):
            check_writable_dir(cfg.out, "out")
            lock = RunLock(cfg.out, "out").acquire()
        result = _train(cfg, info, model, datasets)
        failed = False
        return result
    except BaseException as err:
        if not info.distributed:
            raise
        # a peer's published failure explains a broken collective; our own failure is published for the peers
        peer = peer_failure(err, "train")
        if peer is not None:
            raise peer from None
        raise publish_failure(err) from None
    finally:
        if lock is not None:
            lock.release()
        cleanup_distributed(info, failed)


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

    t_start = time.perf_counter()
    device = info.device
    if cfg.global_batch is not None:
        from freqkit.errors import ParameterError

        if cfg.global_batch % info.world_size:
            raise ParameterError("global_batch", f"{cfg.global_batch} does not divide over {info.world_size} processes; "
                                 "pick a multiple of the world size, or set batch_size per process instead")
        cfg.batch_size = cfg.global_batch // info.world_size
    cfg.global_batch_size = cfg.batch_size * info.world_size
    out = Path(cfg.out)
    main = is_main(info)
    seed_everything(cfg.seed)
    if given is None:
        datasets, data_info = _build_data(cfg)
    else:
        datasets, data_info = _given_datasets(given, cfg)
    cfg.task, cfg.img_size, cfg.num_classes = data_info.task, data_info.img_size, data_info.num_classes
    train_ds, val_ds = datasets["train"], datasets["val"]
    if len(train_ds) < cfg.global_batch_size:
        raise FreqkitError(
            f"the training split has {len(train_ds)} images, fewer than one global batch ({cfg.global_batch_size}); "
            "lower batch_size or add images"
        )
    check_num_classes(cfg.task, cfg.num_classes)
    if net is None:
        net = _build_model(cfg, cfg.task, cfg.num_classes, cfg.img_size)
    if cfg.init is not None:
        from freqkit.train.models import init_backbone

        report = init_backbone(net, cfg.init)
        if main:
            print(report.summary(), flush=True)
    if cfg.task == "segmentation" and cfg.head_norm == "batch" and cfg.batch_size < 2 and not info.distributed:
        from freqkit.errors import ParameterError

        raise ParameterError("batch_size", "must be >= 2 with head_norm='batch' (BatchNorm needs two images per step); use head_norm='group'")
    if info.distributed and device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        # batch statistics over all processes, as with one big batch (PyTorch's SyncBatchNorm runs on GPUs only;
        # CPU processes keep per-process statistics)
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    model = net.to(device)
    check_input_size(model, cfg.img_size, cfg.model, device)
    for split, ds in (("train", train_ds), ("val", val_ds)):
        check = getattr(ds, "check", None)
        if check is not None:
            check(decode=split == "val")  # every validation item is read now, not after training
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.freq_lr_mult, betas=(cfg.beta1, cfg.beta2))
    amp = amp_enabled(cfg.amp, device)
    mean, std = input_stats(model)

    start = 0
    ckpt_dir = out / "checkpoint"
    log_path = out / "log.jsonl"
    if main and not cfg.resume and not cfg.overwrite:
        _check_fresh_out(out)
    found = find_checkpoint(ckpt_dir) if cfg.resume else None  # damaged files: CheckpointDamaged, never a silent restart
    if info.distributed:
        torch.distributed.barrier()  # every rank has looked before rank 0 moves copies around
    if cfg.resume and found is None and main and ckpt_dir.with_name(ckpt_dir.name + ".tmp").exists():
        warnings.warn(f"resume=True: the first checkpoint save into {ckpt_dir} never finished; starting at step 0", stacklevel=2)
    data_id = _data_identity(train_ds, val_ds)
    if found is not None:
        path, saved = found
        _check_resume(saved.get("config", {}), cfg, path)
        _check_same_data(saved.get("extra", {}).get("data"), data_id, path)
        if main:
            settle_checkpoint(ckpt_dir)  # the newest complete copy back under its own name, the others gone
        if info.distributed:
            torch.distributed.barrier()
        saved = load_train_state(ckpt_dir, model, optimizer)
        start = int(saved["step"])
        if main:
            _truncate_log(log_path, start, finished=start >= cfg.steps)
    elif main and log_path.exists():
        log_path.unlink()  # only reached with nothing to lose: _check_fresh_out refused a finished run without overwrite
    if info.distributed:
        torch.distributed.barrier()  # every rank resumes the same step (rank 0 may have settled the copies)

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
        _check_finite_weights(model, step)  # a checkpoint never holds NaN or inf weights
        if main:
            save_train_state(ckpt_dir, model, optimizer, step, cfg.to_dict(), extra={"metrics": metrics, "data": data_id})
        if info.distributed:
            torch.distributed.barrier()

    dense = eval_options(cfg) if cfg.task == "segmentation" else None

    def run_eval(step: int) -> dict[str, float]:
        if dense is not None:
            from freqkit.train.seg_eval import evaluate_dense

            res = evaluate_dense(model, val_ds, cfg.num_classes, device, amp=amp, dist_info=info, **dense)
        else:
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
        try:
            x, y = next(it)
        except FreqkitError as err:
            raise _one_line(err) from None
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        set_lr(optimizer, lr_factor(step, cfg.steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio, warmup_start=cfg.warmup_start_ratio))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = ddp_model(normalize(x, mean, std))
        if isinstance(logits, tuple):  # (main, auxiliary) logits of a segmenter with an auxiliary head
            loss = _loss(logits[0], y) + cfg.aux_weight * _loss(logits[1], y)
        else:
            loss = _loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if cfg.clip_grad:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        window_n += 1
        done = step + 1
        finite = _finite_step(loss, model, grad_norm, info)
        if finite:
            optimizer.step()
        elif cfg.nonfinite == "stop":
            raise FreqkitError(
                f"training diverged at step {done}: the loss or a gradient is NaN or inf; lower lr, set clip_grad, or pass "
                "nonfinite='skip' to skip such steps (the last checkpoint holds finite weights)"
            )
        else:  # skip: no update at all, as a mixed-precision grad scaler does with an overflowing step
            optimizer.zero_grad(set_to_none=True)
            if main:
                _write_jsonl(log_path, {"step": done, "split": "skip", "reason": "non-finite loss or gradient"})
        if finite and cfg.log_every and (done % cfg.log_every == 0 or done == end):  # a skipped step has its own record
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
                raise FreqkitError(f"the loss became {rec['loss']} at step {done}; lower lr or enable clip_grad")
            if main:
                _write_jsonl(log_path, rec)
                history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
        bar.update(1)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            metrics = run_eval(done)
        if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == end:
            save(done)
    bar.close()
    loop_seconds = time.perf_counter() - t_loop
    steps_run = max(0, end - start)
    if end == cfg.steps:
        # the trained model is on disk before the final evaluation runs (a failing evaluation loses nothing)
        if main:
            meta = {"config": json.dumps(cfg.to_dict())}
            save_model_file(model, out / "model.safetensors", metadata=meta)
            atomic_write_json(out / "config.json", cfg.to_dict())
        metrics = run_eval(end)
        if main:
            atomic_write_json(out / "metrics.json", metrics)
    return TrainResult(
        model=model, metrics=metrics, config=cfg, out=out, task=cfg.task, num_classes=cfg.num_classes,
        img_size=cfg.img_size, steps_done=end, seconds=time.perf_counter() - t_start,
        seconds_per_step=loop_seconds / steps_run if steps_run else float("nan"), history=history,
    )
