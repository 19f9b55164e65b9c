"""The training loop: :func:`train` resolves the config once, then runs the steps (single process or torchrun DDP).

``train(TrainConfig(...))`` trains with AdamW (warmup + cosine or poly, layer-wise lr decay, FreqScale lr
multiplier, gradient clipping, optional bf16 autocast), evaluates (:mod:`freqkit.train.evaluate`), and writes
the run folder through :mod:`freqkit.train.rundir` (``model.safetensors`` + ``config.json``, ``metrics.json``,
``log.jsonl``, ``monitor.jsonl`` with per-layer spectral metrics every ``monitor_every`` steps, ``checkpoint/``;
TensorBoard events in ``tensorboard`` when set). The data stream and the lr are functions of the step, and the
checkpoint holds every optimizer and RNG state, so a run stopped at any step and resumed (``resume=True``) ends
with the same weights as an uninterrupted one. Data and model come from :mod:`freqkit.train.setup`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from freqkit.errors import FreqkitError, ParameterError, one_line
from freqkit.io import RunLock, check_writable_dir
from freqkit.ranks import peer_failure, publish_failure
from freqkit.train.checkpoint import find_checkpoint, load_train_state, save_train_state, settle_checkpoint, unwrap
from freqkit.train.config import TrainConfig
from freqkit.train.distributed import DistInfo, ResumableDistributedSampler, cleanup_distributed, init_distributed, is_main
from freqkit.train.evaluate import eval_options, evaluate, evaluate_dense, input_stats, loss_fn, normalize
from freqkit.train.metrics import check_num_classes
from freqkit.train.optim import build_optimizer, lr_factor, set_lr
from freqkit.train.rundir import RunDir
from freqkit.train.setup import (
    amp_enabled,
    build_data,
    build_network,
    check_input_size,
    data_identity,
    given_datasets,
    seed_everything,
)

__all__ = ["train", "TrainResult"]


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

    def to_dict(self) -> dict[str, Any]:
        """Every number and setting (not the weights): config, metrics, timings, history."""
        return {
            "config": self.config.to_dict(),
            "metrics": self.metrics,
            "out": str(self.out),
            "task": self.task,
            "num_classes": self.num_classes,
            "img_size": self.img_size,
            "steps_done": self.steps_done,
            "seconds": self.seconds,
            "seconds_per_step": self.seconds_per_step,
            "history": self.history,
        }

    def to_json(self, path: Union[str, Path, None] = None) -> str:
        """:meth:`to_dict` as JSON text; with ``path`` also written there (atomically)."""
        from freqkit.io import json_text

        return json_text(self.to_dict(), path)

    def save(self, folder: Union[str, Path]) -> Path:
        """Write the run folder (model, config, metrics, timing, training log) into ``folder``; return it."""
        run = RunDir(check_writable_dir(folder, "folder"))
        run.save_model(self.model, self.config)
        run.save_metrics(self.metrics)
        run.save_timing(self.seconds, self.seconds_per_step)
        run.clear_log()
        for rec in self.history:
            run.log(rec)
        return run.path

    @classmethod
    def load(cls, folder: Union[str, Path]) -> "TrainResult":
        """A TrainResult from a run folder written by :func:`train` or :meth:`save` (model rebuilt, weights loaded)."""
        from freqkit.train.rundir import build_run_model, read_run

        d = read_run(folder)
        cfg = TrainConfig.from_dict(d["config"])
        history = RunDir(d["weights"].parent).records()
        return cls(
            model=build_run_model(d["config"], d["weights"]),
            metrics=d["metrics"],
            config=cfg,
            out=Path(folder),
            task=cfg.task,
            num_classes=cfg.num_classes,
            img_size=cfg.img_size,
            steps_done=cfg.steps,
            seconds=d["timing"].get("seconds", float("nan")),
            seconds_per_step=d["timing"].get("seconds_per_step", float("nan")),
            history=history,
        )

    def table(self) -> str:
        """The final metrics, one per line."""
        return "\n".join(f"{k:<14}{v:.4f}" for k, v in self.metrics.items())

    def plot(self) -> dict[str, Any]:
        """Matplotlib figures by file stem: ``loss`` (training loss against the step)."""
        from freqkit.render import curve_figure

        rows = [h for h in self.history if h.get("split") == "train"]
        return {
            "loss": curve_figure(
                {self.config.model: ([h["step"] for h in rows], [h["loss"] for h in rows])}, "step", "training loss"
            )
        }

    def _repr_html_(self) -> str:
        from freqkit import render

        facts = {
            "model": self.config.model,
            "data": self.config.data,
            "task": self.task,
            "steps": self.steps_done,
            "seconds": f"{self.seconds:.1f}",
            **{k: f"{v:.4f}" for k, v in self.metrics.items()},
        }
        return render.fragment(f"TrainResult: {self.config.model}", render.kv_table(facts), self.plot())


def train(
    config: Optional[TrainConfig] = None,
    model: Optional[nn.Module] = None,
    datasets: Optional[dict[str, Dataset]] = None,
    data_info: Any = None,
    *,
    distributed: Optional[bool] = None,
    **options: Any,
) -> TrainResult:
    """Train (and evaluate) one model as ``config`` says; works alone or as one process of a torchrun job.

    ``config`` is a :class:`TrainConfig` (or ``None``: its defaults); ``options`` override its fields, as in
    ``freqkit.train(model_cfg, lr=3e-4)`` or ``freqkit.train(model="vit_mini+fdam", steps=50)``. ``model``: your own
    network (classifier, or segmenter returning (B, K, H, W) logits) instead of building ``config.model``, which
    then only names it. ``datasets``: ``{"train": Dataset, "val": Dataset}`` (items: image (3, H, W) in [0, 1] and
    an int class or a (H, W) long mask) instead of ``config.data``; ``config.task`` and ``config.num_classes`` are
    required then, unless ``data_info`` (the :class:`freqkit.data.DataInfo` that ``build_datasets`` returned with
    them) says them.

    Before any training: the settings are checked, ``out`` is proven writable and locked against other
    runs (rank 0), the model is built and fed one image of the chosen size, and every validation item is
    read and checked (labels in range), so bad input fails in seconds with one line.

    ``distributed``: None trains with every torchrun process (DDP) when WORLD_SIZE > 1; False trains in this
    process alone, on its own device (what ``freqkit.compare`` does with each run it spreads over the processes).
    """
    if isinstance(model, str):  # train(model="vit_mini+fdam"): a spec, i.e. a config field
        options["model"], model = model, None
    base = config if config is not None else TrainConfig()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in options:
        if key not in known:
            raise ParameterError(key, f"is not a TrainConfig field; use one of {', '.join(sorted(known))}")
    cfg = dataclasses.replace(TrainConfig.from_dict(base.to_dict()), **options).validate()
    from freqkit.train.recipes import check_init

    check_init(cfg)  # a recipe's 160k steps never start from random weights by accident
    info = init_distributed(cfg.device, distributed)
    lock: Optional[RunLock] = None
    failed = True
    try:
        if is_main(info):
            check_writable_dir(cfg.out, "out")
            lock = RunLock(cfg.out, "out").acquire()
            if cfg.tensorboard:
                check_writable_dir(cfg.tensorboard, "tensorboard")
        result = _train(cfg, info, model, datasets, data_info)
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


def _train(
    cfg: TrainConfig,
    info: DistInfo,
    net: Optional[nn.Module] = None,
    given: Optional[dict[str, Dataset]] = None,
    given_info: Any = None,
) -> TrainResult:
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    device = info.device
    cfg = cfg.per_process(info.world_size)
    out = Path(cfg.out)
    run_dir = RunDir(out)
    main = is_main(info)
    seed_everything(cfg.seed)
    if given is None:
        datasets, data_info = build_data(cfg)
    else:
        datasets, data_info = given_datasets(given, cfg, given_info)
    # the config is complete from here on and never changes during the run
    cfg = dataclasses.replace(cfg, task=data_info.task, img_size=data_info.img_size, num_classes=data_info.num_classes)
    train_ds, val_ds = datasets["train"], datasets["val"]
    if len(train_ds) < cfg.global_batch_size:
        raise FreqkitError(
            f"the training split has {len(train_ds)} images, fewer than one global batch ({cfg.global_batch_size}); "
            "lower batch_size or add images"
        )
    check_num_classes(cfg.task, cfg.num_classes)
    if net is None:
        net = build_network(cfg, cfg.task, cfg.num_classes, cfg.img_size)
    if cfg.init is not None and cfg.init != "scratch":
        from freqkit.models.spec import init_backbone

        report = init_backbone(net, cfg.init)
        if main:
            print(report.summary(), flush=True)
    if cfg.task == "segmentation" and cfg.head_norm == "batch" and cfg.batch_size < 2 and not info.distributed:
        raise ParameterError(
            "batch_size", "must be >= 2 with head_norm='batch' (BatchNorm needs two images per step); use head_norm='group'"
        )
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
    optimizer = build_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.freq_lr_mult, betas=(cfg.beta1, cfg.beta2), wd_exempt=cfg.wd_exempt
    )
    amp = amp_enabled(cfg.amp, device)
    mean, std = input_stats(model)

    start = 0
    ckpt_dir = run_dir.checkpoint
    if main and not cfg.resume and not cfg.overwrite:
        run_dir.check_fresh()
    found = find_checkpoint(ckpt_dir) if cfg.resume else None  # damaged files: CheckpointDamaged, never a silent restart
    if info.distributed:
        torch.distributed.barrier()  # every rank has looked before rank 0 moves copies around
    if cfg.resume and found is None and main and ckpt_dir.with_name(ckpt_dir.name + ".tmp").exists():
        warnings.warn(f"resume=True: the first checkpoint save into {ckpt_dir} never finished; starting at step 0", stacklevel=2)
    data_id = data_identity(train_ds, val_ds)
    if found is not None:
        path, saved = found
        run_dir.check_resume(saved.get("config", {}), cfg, path)
        run_dir.check_same_data(saved.get("extra", {}).get("data"), data_id, path)
        if main:
            settle_checkpoint(ckpt_dir)  # the newest complete copy back under its own name, the others gone
        if info.distributed:
            torch.distributed.barrier()
        saved = load_train_state(ckpt_dir, model, optimizer)
        start = int(saved["step"])
        if main:
            run_dir.truncate_log(start, finished=start >= cfg.steps)
    elif main:
        run_dir.clear_log()  # only reached with nothing to lose: check_fresh refused a finished run without overwrite
    tb, monitor = None, None
    if main:  # the spectral monitor and TensorBoard: rank 0 only, no collective calls
        from freqkit.train.monitoring import start_monitor, tensorboard_writer

        tb = tensorboard_writer(cfg.tensorboard, start)
        monitor = start_monitor(cfg, model, val_ds, lambda x: normalize(x, mean, std), out, start, found is not None, tb)
    if info.distributed:
        torch.distributed.barrier()  # every rank resumes the same step (rank 0 may have settled the copies)

    ddp_model: nn.Module = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device] if device.type == "cuda" else None)

    sampler = ResumableDistributedSampler(train_ds, cfg.batch_size, info.world_size, info.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=True,
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
            res = evaluate_dense(model, val_ds, cfg.num_classes, device, amp=amp, dist_info=info, **dense)
        else:
            res = evaluate(model, val_ds, cfg.task, cfg.num_classes, device, cfg.eval_batch_size or cfg.batch_size, amp, info)
        if main:
            rec = {"step": step, "split": "val", **res}
            run_dir.log(rec)
            history.append(rec)
            for key, value in res.items() if tb is not None else ():
                tb.add_scalar(f"val/{key}", value, step)
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
            raise one_line(err) from None
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        set_lr(
            optimizer,
            lr_factor(
                step,
                cfg.steps,
                cfg.warmup,
                cfg.schedule,
                cfg.min_lr_ratio,
                warmup_start=cfg.warmup_start_ratio,
                warmup_style=cfg.warmup_style,
            ),
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = ddp_model(normalize(x, mean, std))
        if isinstance(logits, tuple):  # (main, auxiliary) logits of a segmenter with an auxiliary head
            loss = loss_fn(logits[0], y, cfg.loss_mean) + cfg.aux_weight * loss_fn(logits[1], y, cfg.loss_mean)
        else:
            loss = loss_fn(logits, y, cfg.loss_mean)
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
                run_dir.log({"step": done, "split": "skip", "reason": "non-finite loss or gradient"})
        if finite and cfg.log_every and (done % cfg.log_every == 0 or done == end):  # a skipped step has its own record
            loss_v = loss.detach().clone()
            if info.distributed:
                torch.distributed.all_reduce(loss_v)
                loss_v /= info.world_size
            now = time.perf_counter()
            rec = {
                "step": done,
                "split": "train",
                "loss": float(loss_v),
                "lr": optimizer.param_groups[-1]["lr"],
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "img_per_s": window_n * cfg.global_batch_size / max(now - window_t, 1e-9),
            }
            window_t, window_n = now, 0
            if not math.isfinite(rec["loss"]):
                raise FreqkitError(f"the loss became {rec['loss']} at step {done}; lower lr or enable clip_grad")
            if main:
                run_dir.log(rec)
                history.append(rec)
                if tb is not None:
                    tb.add_scalar("train/loss", rec["loss"], done)
                    tb.add_scalar("train/lr", rec["lr"], done)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
        bar.update(1)
        if monitor is not None:  # before the checkpoint of this step: a resume keeps the records up to it
            monitor.step(done, force=done == cfg.steps)
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
            run_dir.save_model(model, cfg)
        metrics = run_eval(end)
        if main:
            run_dir.save_metrics(metrics)
    if tb is not None:
        tb.close()
    return TrainResult(
        model=model,
        metrics=metrics,
        config=cfg,
        out=out,
        task=cfg.task,
        num_classes=cfg.num_classes,
        img_size=cfg.img_size,
        steps_done=end,
        seconds=time.perf_counter() - t_start,
        seconds_per_step=loop_seconds / steps_run if steps_run else float("nan"),
        history=history,
    )
