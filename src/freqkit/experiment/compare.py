"""Compare models: train each over seeds, evaluate, diagnose, and gather it all in one :class:`Comparison`.

    cmp = freqkit.compare(["vit_mini", "vit_mini+fdam"], data="shapes", steps=500, seeds=(0, 1, 2), out="cmp/")
    print(cmp.table()); cmp.save("cmp/")            # report.html, results.json, figures, analysis/

:func:`compare` is a small orchestrator: it checks its options, builds the datasets once and hands them to
:func:`freqkit.train.preflight` and to :func:`freqkit.train` for every model and seed (a finished run of the same
settings is reused when ``resume``; :class:`freqkit.train.RunDir` decides), then runs :func:`freqkit.analyze` on
each trained backbone over a fixed batch of validation images. The summary, figures and HTML are
:mod:`freqkit.experiment.reporting`'s. ``freqkit compare`` is this function on the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from freqkit.errors import FreqkitError, ParameterError
from freqkit.experiment.reporting import CURVES, Comparison, format_metrics, merge_predictions, summarize
from freqkit.io import RunLock, check_writable_dir
from freqkit.render import check_distinct_folders, slug

__all__ = ["compare", "Comparison", "parse_seeds", "DEFAULT_MODELS", "DEFAULT_STEPS", "COMPARE_HELP"]

DEFAULT_MODELS = ("vit_mini", "vit_mini+fdam")
DEFAULT_STEPS = 500
# help of compare's own options (the ``freqkit compare`` flags are generated from the signature and these)
COMPARE_HELP = {
    "models": "comma-separated model specs, each BASE[+METHOD...] as for freqkit train's --model",
    "data": "dataset spec, as for freqkit train's --data",
    "steps": "optimizer steps per run",
    "seeds": "number of seeds N (seeds 0..N-1) or a comma list such as 0,5,7",
    "out": "output folder",
    "resume": "reuse finished runs of the same settings found in OUT/runs (and continue checkpointed ones)",
    "analyze_images": "validation images fed to freqkit.analyze",
    "keep_checkpoints": "keep each run's resumable checkpoint/ folder",
}
# TrainConfig fields that compare sets itself (per model and seed, or from its own arguments)
_OWN_FIELDS = ("model", "data", "steps", "seed", "out", "resume", "overwrite")

ModelFactory = Callable[[], Any]


def parse_seeds(value: Union[int, str, Sequence[int]]) -> list[int]:
    """Seeds from a count (3 -> [0, 1, 2]), a comma list ('0,5,7'; '4,' -> [4]) or a sequence of ints."""
    given = value
    try:
        if isinstance(value, str):
            if "," in value:
                seeds = [int(s) for s in value.split(",") if s.strip()]
            else:
                value = int(value)
        if isinstance(value, int):
            if value < 1:
                raise ValueError
            seeds = list(range(value))
        elif not isinstance(value, str):
            seeds = [int(s) for s in value]
    except (TypeError, ValueError):
        raise ParameterError("seeds", f"{given!r} is not a count N >= 1 or a list of integers such as 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ParameterError("seeds", f"{given!r}: list each seed once")
    return seeds


def _fixed_images(dataset, count: int):
    """The first ``count`` validation images (B, 3, H, W) in [0, 1], the same for every model and seed."""
    import torch

    n = min(count, len(dataset))
    return torch.stack([dataset[i][0] for i in range(n)])


def _encoder(model):
    """The part of a trained model that ``analyze`` diagnoses: the backbone of a segmenter, the classifier itself."""
    return getattr(model, "encoder", model)


def _normalize_models(
    models: Union[Sequence[str], Mapping[str, Union[str, ModelFactory]]],
) -> dict[str, Union[str, ModelFactory]]:
    if isinstance(models, str):
        models = [m for m in models.split(",")]
    if isinstance(models, Mapping):
        named = {str(k): v for k, v in models.items()}
    else:
        names = [str(m).strip() for m in models if str(m).strip()]
        if len(set(names)) != len(names):
            raise ParameterError("models", f"{list(models)!r} repeats a model; list each once")
        named = {m: m for m in names}
    if not named:
        raise ParameterError("models", "is empty; give model specs such as ['vit_mini', 'vit_mini+fdam']")
    check_distinct_folders(named, "models")
    return named


def _base_config(data: Any, steps: int, train_options: dict[str, Any]):
    """The validated TrainConfig every run starts from; unknown or compare-owned options are refused."""
    from freqkit.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in train_options:
        if key not in known or key in _OWN_FIELDS:
            raise ParameterError(
                key, f"is not a training option of compare; use one of {', '.join(sorted(known - set(_OWN_FIELDS)))}"
            )
    return TrainConfig(steps=steps, data=data if isinstance(data, str) else "custom", **train_options).validate()


def _datasets(data: Any, base_cfg, seed: int):
    """(datasets, DataInfo, given_info): built once per comparison from a spec, or the caller's mapping checked.

    ``given_info`` is what train is told about the data (None for the caller's own datasets: train reads
    their size off the first training image, as when they are passed to train directly).
    """
    from freqkit.data.spec import DataInfo
    from freqkit.train.setup import build_data

    if isinstance(data, str):
        datasets, info = build_data(dataclasses.replace(base_cfg, seed=seed))
        return datasets, info, info
    if not {"train", "val"} <= set(data):
        raise ParameterError("data", "as a mapping needs 'train' and 'val' datasets")
    if base_cfg.task is None or base_cfg.num_classes is None:
        raise ParameterError("task", "and num_classes must be given when data is a mapping of datasets")
    size = int(data["val"][0][0].shape[-1])
    return (
        dict(data),
        DataInfo(name="custom", task=base_cfg.task, num_classes=base_cfg.num_classes, img_size=size, classes=()),
        None,
    )


def _for_seed(datasets: dict[str, Any], seed: int) -> dict[str, Any]:
    """The shared datasets with the training split's augmentation stream of ``seed`` (its files are not listed again)."""
    reseed = getattr(datasets["train"], "with_seed", None)
    return {**datasets, "train": reseed(seed)} if callable(reseed) else datasets


def _train_or_reuse(
    cfg, spec: Union[str, ModelFactory], datasets: dict[str, Any], given_info: Any, resume: bool
) -> dict[str, Any]:
    """One run: reuse the finished run in ``cfg.out`` when ``resume`` and its settings agree, else train (and time) it."""
    import torch

    from freqkit.experiment.runs import open_run
    from freqkit.train import train
    from freqkit.train.rundir import RunDir, train_history

    run_dir = RunDir(cfg.out)
    if resume and not callable(spec) and run_dir.finished_as(cfg):
        run = open_run(run_dir.path)
        print(f"{cfg.model} seed {cfg.seed}: reusing the finished run in {run_dir.path}", file=sys.stderr)
        return {"model": run.model(), "metrics": run.metrics, "history": run.history, **run.timing}
    net = None
    if callable(spec):
        torch.manual_seed(cfg.seed)
        net = spec()
    # compare owns its runs: without resume they are trained again (overwrite), with it continued
    res = train(
        dataclasses.replace(cfg, resume=bool(resume), overwrite=not resume),
        model=net,
        datasets=datasets,
        data_info=given_info,
        distributed=False,  # every run alone in its process; under torchrun compare spreads the runs instead
    )
    run_dir.save_timing(res.seconds, res.seconds_per_step)
    # the log holds every step, also those before a resume (res.history starts at the resume)
    return {
        "model": res.model,
        "metrics": res.metrics,
        "history": train_history(run_dir.path) or res.history,
        "seconds": res.seconds,
        "seconds_per_step": res.seconds_per_step,
    }


def _diagnose(name: str, net, images01, steps: int, seed: int):
    """freqkit.analyze of the trained backbone on the fixed images -> Report (None when analyze cannot read the model)."""
    import torch

    from freqkit.analysis import analyze
    from freqkit.train.evaluate import input_stats, normalize

    mean, std = input_stats(net)
    enc = _encoder(net)
    x = normalize(images01.to(next(enc.parameters()).device), mean, std)
    try:
        with torch.no_grad():
            return analyze({name: enc}, x, info={name: {"weights": f"trained {steps} steps, seed {seed}"}}, distributed=False)
    except FreqkitError as err:  # e.g. a features-only wrapper whose layers analyze cannot find
        print(f"{name}: no spectral diagnostics ({err})", file=sys.stderr)
        return None


def _prediction_batch(val, task: str):
    """(images, targets) for the prediction figures: 4 fixed images for segmentation panels, up to 512 for confusion matrices."""
    import torch

    items = [val[i] for i in range(min(len(val), 4 if task == "segmentation" else 512))]
    return torch.stack([it[0] for it in items]), torch.stack([torch.as_tensor(it[1]) for it in items])


def _analysis_val(data: Any, base_cfg, datasets: dict[str, Any]):
    """The validation split the fixed analysis and prediction images come from: square images of one size.

    With ``crop_size`` the training data's validation items keep their original sizes, so these few images
    are taken from the split resized to one square size instead.
    """
    if not (isinstance(data, str) and base_cfg.crop_size):
        return datasets["val"]
    from freqkit.data import build_datasets

    splits, _ = build_datasets(
        data, task=base_cfg.task, img_size=base_cfg.img_size, num_classes=base_cfg.num_classes, splits=("val",)
    )
    return splits["val"]


def _predictions(name: str, net, batch, info) -> dict[str, Any]:
    """Prediction panels (segmentation) or a confusion matrix (classification) of one trained model."""
    from freqkit.analysis.predictions import prediction_panel_data
    from freqkit.train.evaluate import input_stats

    images, targets = batch
    mean, std = input_stats(net)
    device = next(net.parameters()).device
    return prediction_panel_data(
        {name: net},
        images.to(device),
        targets,
        info.task,
        mean,
        std,
        num_classes=info.num_classes,
        class_names=list(info.classes) or None,
    )


def _settings(
    named, data, steps, seed_list, train_options, base_cfg, info, val_images: int, analyze_images: int, device: str, t0: float
) -> dict[str, Any]:
    """The ``settings`` block of the results: the call as Python, the data, the options that differ from the defaults."""
    import torch

    from freqkit.train import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in train_options.items() if v != defaults.get(k)}  # the call shows what differs
    data_name = data if isinstance(data, str) else "custom"
    call = (
        f"freqkit.compare({list(named)!r}, data={data_name!r}, steps={steps}, seeds={tuple(seed_list)!r}"
        + "".join(f", {k}={v!r}" for k, v in options.items())
        + ")"
    )
    return {
        "call": call,
        "models": list(named),
        "data": data_name,
        "task": info.task,
        "num_classes": info.num_classes,
        "img_size": info.img_size,
        "steps": steps,
        "batch_size": base_cfg.batch_size,
        "lr": base_cfg.lr,
        "schedule": base_cfg.schedule,
        "seeds": seed_list,
        "train_options": options,
        "val_images": val_images,
        "analyze_images": analyze_images,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }


@dataclasses.dataclass
class _Plan:
    """What every run of a comparison shares: the data, each run's config, the fixed analysis and prediction images."""

    datasets: dict[str, Any]
    info: Any
    given_info: Any
    run_cfg: dict[tuple[str, int], Any]
    val: Any
    images01: Any
    pred_batch: Any


def _plan(named, data, base_cfg, seed_list: list[int], root: Path, analyze_images: int, check: bool) -> _Plan:
    """Build the data once, every run's config, and (``check``) preflight every model before anything trains."""
    from freqkit.train import preflight

    datasets, info, given_info = _datasets(data, base_cfg, seed_list[0])
    for name, spec in named.items():
        if not isinstance(spec, str) and not callable(spec):
            raise ParameterError("models", f"entry {name!r} is neither a model spec string nor a callable returning a module")
    run_cfg = {
        (name, seed): dataclasses.replace(
            base_cfg, model=name if callable(spec) else spec, seed=seed, out=str(root / "runs" / slug(name) / f"seed{seed}")
        )
        for name, spec in named.items()
        for seed in seed_list
    }
    for (name, seed), cfg in run_cfg.items() if base_cfg.tensorboard else ():  # one TensorBoard run per model and seed
        cfg.tensorboard = str(Path(base_cfg.tensorboard) / slug(name) / f"seed{seed}")
    if check and isinstance(data, str):
        # every spec is built and fed one image, every run folder proven writable, before anything trains
        preflight([run_cfg[name, seed_list[0]] for name, spec in named.items() if isinstance(spec, str)], data=(datasets, info))
    val = _analysis_val(data, base_cfg, datasets)
    return _Plan(datasets, info, given_info, run_cfg, val, _fixed_images(val, analyze_images), _prediction_batch(val, info.task))


def _run(name: str, spec, seed: int, first: bool, plan: _Plan, data, steps: int, resume: bool, keep: bool) -> dict[str, Any]:
    """Train (or reuse) one run, diagnose it; -> its entry of ``Comparison.runs`` (+ report and predictions if ``first``)."""
    import shutil

    from freqkit.monitor import monitor_curves

    cfg = plan.run_cfg[name, seed]
    own = _for_seed(plan.datasets, seed) if isinstance(data, str) else plan.datasets
    done = _train_or_reuse(cfg, spec, own, plan.given_info, resume)
    net = done["model"].eval()
    rep = _diagnose(name, net, plan.images01, steps, seed)
    entry = {
        "seed": seed,
        "metrics": done["metrics"],
        "seconds": done["seconds"],
        "seconds_per_step": done["seconds_per_step"],
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "history": [h for h in done["history"] if h.get("split") == "train"],
        "monitor": monitor_curves(Path(cfg.out) / "monitor.jsonl"),  # per-layer curves over training (monitor_every)
        **{key: None if rep is None else rep[name].series(key) for key in CURVES},
    }
    if not keep:
        shutil.rmtree(Path(cfg.out) / "checkpoint", ignore_errors=True)
    print(f"{name} seed {seed}: {format_metrics(done['metrics'])}  ({done['seconds']:.1f} s)", file=sys.stderr)
    return {
        "entry": entry,
        "report": rep if first else None,
        "predictions": _predictions(name, net, plan.pred_batch, plan.info) if first else None,
        "device": str(next(net.parameters()).device),
    }


def _spread(board, tasks: list[tuple[str, Any, int]], work: Callable[[int], dict[str, Any]], plan_fn, root: Path):
    """Every process plans, rank 0 first (it locks and preflights); then each claims runs until none is left.

    A failing run is posted as its one line and the process takes the next; once every process is idle, all
    read every outcome, and a failure raises the same line everywhere (the finished runs stay in ``root/runs``).
    """
    from freqkit.ranks import RankFailed, describe

    plan = None
    try:
        try:
            if board.rank == 0:
                plan = plan_fn(True)
                board.post("ready", True)
            else:
                plan = plan_fn(False)
                board.wait_posted("ready")  # after an abort the claims below stop at once
        except Exception as err:  # noqa: BLE001  (stops every rank's claims; raised again below)
            board.abort(f"rank {board.rank}: {describe(err)}")
            raise
        for index in board.claim(len(tasks)):
            name, _, seed = tasks[index]
            try:
                board.post(f"task/{index}", work(index))
            except Exception as err:  # noqa: BLE001  (the run's one line goes to every rank; the other runs go on)
                if not isinstance(err, FreqkitError):
                    import traceback

                    traceback.print_exc()  # a bug keeps its traceback on the rank that hit it
                board.post(f"task/{index}", {"failed": f"{name} seed {seed} failed on rank {board.rank}: {describe(err)}"})
    finally:
        board.idle()
    outcomes = board.outcomes(len(tasks))
    aborted = board.aborted()
    if aborted is not None:  # a rank could not start: nothing was claimed after that
        rank, cause = aborted.split(": ", 1)
        raise RankFailed(f"{rank} of {board.world} failed during compare: {cause}; rank {board.rank} stopped too")
    failed = [o["failed"] for o in outcomes.values() if "failed" in o]
    if failed:
        more = f" ({len(failed)} of {len(tasks)} runs failed)" if len(failed) > 1 else ""
        raise FreqkitError(
            f"compare: {failed[0]}{more}; the {len(tasks) - len(failed)} finished runs are kept in {root / 'runs'}: "
            "fix the cause and rerun with --resume to reuse them"
        )
    return plan, [outcomes[i] for i in range(len(tasks))]


@contextlib.contextmanager
def _thread_share(local_world: int, device: str):
    """On CPU under torchrun: this process's share of the cores for torch's threads (restored on exit)."""
    import torch

    from freqkit.distributed import resolve_device

    if local_world <= 1 or resolve_device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // local_world))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compare(
    models: Union[Sequence[str], Mapping[str, Union[str, ModelFactory]]] = DEFAULT_MODELS,
    *,
    data: Union[str, Mapping[str, Any]] = "shapes",
    steps: int = DEFAULT_STEPS,
    seeds: Union[int, str, Sequence[int]] = (0,),
    out: Union[str, Path, None] = None,
    resume: bool = False,
    analyze_images: int = 16,
    keep_checkpoints: bool = False,
    **train_options: Any,
) -> Comparison:
    """Train, evaluate and diagnose every model for every seed; return (and with ``out``, save) a :class:`Comparison`.

    ``models``: model specs (``"vit_mini+fdam"``), or a mapping name -> spec or name -> zero-argument callable
    that returns a fresh ``nn.Module`` (called once per seed, after seeding). ``data``: a data spec string, or
    ``{"train": Dataset, "val": Dataset}`` (items: image (3, H, W) in [0, 1], target; then ``task`` and
    ``num_classes`` go in ``train_options``). ``train_options``: any other :class:`freqkit.TrainConfig` field
    (``batch_size``, ``lr``, ``img_size``, ...). ``out``: the folder for runs and report (``None``: a temporary
    folder, nothing kept). ``resume``: reuse finished runs of the same settings found in ``out/runs``.

    Under torchrun (WORLD_SIZE > 1) the (model, seed) runs are spread over the processes: each takes the next
    unclaimed run and trains it alone on its own device (cuda:LOCAL_RANK; on CPU its share of the cores), rank 0
    writes the report, and every process returns the same :class:`Comparison`. Each run is seeded, so its numbers
    do not depend on which process made it. ``out`` must then be one folder that every process sees.
    """
    from freqkit.analysis import Report
    from freqkit.distributed import TaskBoard, torchrun_world

    t0 = time.perf_counter()
    named = _normalize_models(models)
    seed_list = parse_seeds(seeds)
    if analyze_images < 1:
        raise ParameterError("analyze_images", f"must be at least 1, got {analyze_images}")
    base_cfg = _base_config(data, steps, train_options)
    rank, world, local_world = torchrun_world()
    board = TaskBoard.join("compare") if world > 1 else None
    tmp = tempfile.TemporaryDirectory(prefix="freqkit-compare-") if out is None else None
    lock = None
    try:
        root = Path(tmp.name) if tmp is not None else check_writable_dir(out, "out")
        tasks = [(name, spec, seed) for name, spec in named.items() for seed in seed_list]

        plan: Optional[_Plan] = None

        def plan_fn(check: bool) -> _Plan:
            nonlocal lock, plan
            if check and tmp is None:
                # one comparison per folder, for its whole length: a second one fails here, before touching any finished run
                lock = RunLock(root, "out").acquire()
            plan = _plan(named, data, base_cfg, seed_list, root, analyze_images, check)
            return plan

        def work(i: int) -> dict[str, Any]:
            name, spec, seed = tasks[i]
            assert plan is not None  # planned before any run is claimed
            return _run(name, spec, seed, seed == seed_list[0], plan, data, steps, resume, keep_checkpoints)

        with _thread_share(local_world, base_cfg.device):
            if board is None:
                plan = plan_fn(True)
                done = [work(i) for i in range(len(tasks))]
            else:
                plan, done = _spread(board, tasks, work, plan_fn, root)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in named}
        first_reports, predictions = [], None
        for (name, _, _), outcome in zip(tasks, done):
            runs[name].append(outcome["entry"])
            if outcome["report"] is not None:
                first_reports.append(outcome["report"])
            if outcome["predictions"] is not None:
                predictions = merge_predictions(predictions, outcome["predictions"])
        settings = _settings(
            named,
            data,
            steps,
            seed_list,
            train_options,
            base_cfg,
            plan.info,
            len(plan.val),
            int(plan.images01.shape[0]),
            done[-1]["device"],
            t0,
        )
        settings["processes"] = world
        result = Comparison(
            settings=settings,
            summary=summarize(runs, plan.info.task),
            runs=runs,
            predictions=predictions,
            analysis=Report.merge(*first_reports) if first_reports else None,
        )
        if out is not None and rank == 0:
            result.save(root)
        return result
    finally:
        if board is not None:
            board.close()
        if lock is not None:
            lock.release()
        if tmp is not None:
            tmp.cleanup()
