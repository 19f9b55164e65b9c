"""``analyze``: stream images through one or more models and summarize their spectral behaviour in a Report.

Per layer (spatial tokens only; prefix tokens are dropped): high-frequency ratio, relative log
amplitude and its high-frequency value, the 2-D log-amplitude spectrum and its radial profile,
effective rank, token cosine similarity and rank-collapse residual; across layers the cross-layer
similarity and the linear CKA matrices. With ``attention=True``, per attention layer the local and
global responses and, per head, the local-response high-frequency share, the attention entropy,
the mean attention distance and the effective rank of the attention map. With ``erf``, the
effective receptive field of selected layers and its radial spectrum.

Streaming: every statistic is a sum over images of a per-image value, kept in float64, so the
statistics of any split of the images (batches, torchrun ranks, an interrupted and resumed run)
add up to those of one pass, and memory does not grow with the number of images.

CKA samples are tokens: within each image the H*W spatial tokens (of one layer, or of another
layer or model at the same grid position) are the samples and the image is the mini-batch of the
unbiased HSIC estimator (Nguyen et al. 2021). This keeps the estimate a per-image sum, so it is
exactly the same whatever the batch size, the number of processes or the order of the images.
With images as samples, the estimate would depend on which images share a mini-batch. Layers with
a finer grid are average-pooled to the coarsest grid first (per model; across models to the
coarsest grid of all), so tokens at the same position cover the same image region.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from freqkit.analysis.accumulator import Accumulator, all_reduce
from freqkit.analysis.batch_stats import add_batch, add_erf, add_joint_cka, check_finite, erf_layers
from freqkit.analysis.finish import joint_cka, model_info, model_report, run_settings
from freqkit.analysis.report import Report
from freqkit.analysis.resume import ResumeState
from freqkit.analysis.stream import Source, make_source
from freqkit.distributed import DistInfo, cleanup_distributed, init_distributed, rank_world
from freqkit.errors import FreqkitError, ParameterError
from freqkit.io import check_writable_dir
from freqkit.limits import check_limit
from freqkit.probe import capture
from freqkit.ranks import together
from freqkit.render import check_distinct_folders

__all__ = ["analyze", "model_name"]

Models = Union[nn.Module, str, Mapping[str, Union[nn.Module, str]], Sequence[Union[nn.Module, str]]]
PathLike = Union[str, os.PathLike]
Checkpoints = Union[PathLike, Sequence[Optional[PathLike]], Mapping[str, PathLike], None]

_JOINT = "\0joint"  # accumulator key of the model-by-model CKA


def model_name(model: nn.Module) -> str:
    """A readable name: timm's architecture name when known, else the class name."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return str(cfg.get("architecture") or getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


@dataclass(frozen=True)
class _Options:
    """What each batch computes (the options of :func:`analyze` that the loop reads)."""

    attention: bool
    layers: Optional[Sequence[str]]
    cutoff: float
    bins: int
    chunk_size: int
    cka: bool
    erf: Union[bool, Sequence[str]]
    methods: bool
    save_every: int


def _pairs(models: Models) -> list[tuple[str, Union[nn.Module, str]]]:
    if isinstance(models, (nn.Module, str)):
        models = [models]
    if isinstance(models, Mapping):
        pairs = [(str(k), v) for k, v in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, bytes):
        pairs = [(m if isinstance(m, str) else model_name(m), m) for m in models]
    else:
        raise ParameterError(
            "models", f"must be a model, a name, a dict name -> model or a list of them, got {type(models).__name__}"
        )
    if not pairs:
        raise ParameterError("models", "is empty; pass a model, a dict name -> model or a list of models")
    return pairs


def _checkpoints(checkpoint: Checkpoints, names: list[str]) -> dict[str, Optional[PathLike]]:
    """Model key -> its checkpoint, for the models given by name (one path for one name, else one per name in order)."""
    if checkpoint is None:
        return {}
    if isinstance(checkpoint, Mapping):
        unknown = [k for k in checkpoint if k not in names]
        if unknown:
            raise ParameterError("checkpoint", f"names {unknown}, which are not models given by name ({names}); key it by those")
        return dict(checkpoint)
    paths = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    if len(paths) != len(names):
        raise ParameterError(
            "checkpoint", f"lists {len(paths)} files for {len(names)} models given by name; pass one per model, in their order"
        )
    return dict(zip(names, paths))


def _weights(pretrained: bool, checkpoint: Optional[PathLike]) -> str:
    if pretrained:
        return "pretrained (timm)"
    return f"checkpoint {checkpoint}" if checkpoint is not None else "random init (no pretrained weights)"


def _named_models(
    models: Models, img_size: Any, pretrained: bool, checkpoint: Checkpoints
) -> tuple[list[tuple[str, nn.Module]], dict[str, dict[str, str]]]:
    """(unique name, model) pairs, names built with ``freqkit.models.create``; and {name: {"model", "weights"}} of those built."""
    pairs = _pairs(models)
    keys, seen = [], {}
    for name, _ in pairs:
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    by_name = [k for k, (_, m) in zip(keys, pairs) if isinstance(m, str)]
    ckpts = _checkpoints(checkpoint, by_name)
    built: dict[str, dict[str, str]] = {}
    out = []
    # random-init models get the same weights on every run and every torchrun process, without touching the caller's RNG
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(0)
        for key, (_, m) in zip(keys, pairs):
            if isinstance(m, str):
                from freqkit.models import create

                ckpt = ckpts.get(key)
                built[key] = {"model": m, "weights": _weights(pretrained, ckpt)}
                m = create(m, pretrained=pretrained, checkpoint=ckpt, img_size=img_size)
            if not isinstance(m, nn.Module):
                raise ParameterError("models", f"entry {key!r} is a {type(m).__name__}, not a torch.nn.Module or a model name")
            out.append((key, m))
    check_distinct_folders(keys, "models")  # each model's figures are files named after it
    return out, built


def _device_dtype(model: nn.Module) -> tuple[torch.device, Optional[torch.dtype]]:
    p = next(iter(model.parameters()), None)
    if p is None:
        return torch.device("cpu"), None
    return p.device, (p.dtype if p.is_floating_point() else None)


def _check_size(img_size: Any) -> None:
    from freqkit.data.spec import MAX_IMG_SIZE

    sides = [img_size] * 2 if isinstance(img_size, int) else [] if img_size is None else list(img_size) * (3 - len(img_size))
    if any(not 1 <= int(v) <= MAX_IMG_SIZE for v in sides):
        raise ParameterError(
            "img_size", f"{' '.join(str(v) for v in sides)} must be in 1..{MAX_IMG_SIZE} pixels a side; e.g. img_size=224"
        )


def _check_options(
    pairs: list[tuple[str, nn.Module]], cutoff: float, bins: int, save_every: int, resume: bool, state_dir: Any
) -> None:
    for name, m in pairs:
        if _device_dtype(m)[0].type == "meta":
            raise FreqkitError(
                f"model {name} is on the meta device (shapes only); materialize its weights (to_empty + init, or a checkpoint) to analyze it"
            )
    if not 0.0 <= float(cutoff) <= 1.5:
        raise ParameterError(
            "cutoff", f"{cutoff} is outside [0, 1.5]; the normalized radius is 1 at the Nyquist frequency, default 0.5"
        )
    if int(bins) != bins or int(bins) < 1:
        raise ParameterError("bins", f"must be a positive int, got {bins!r}")
    check_limit("bins", int(bins), "bins", " rings")
    if int(save_every) < 1:
        raise ParameterError("save_every", f"must be a positive number of batches, got {save_every!r}")
    if resume and state_dir is None:
        raise ParameterError("resume", "needs state_dir, the folder the interrupted run saved its statistics to")
    if state_dir is not None:
        check_writable_dir(state_dir, "state_dir")  # before any image is read, not after the whole pass


def _progress_bar(total: Optional[int], initial: int, world: int) -> Any:
    from tqdm.auto import tqdm

    desc = "analyze" if world == 1 else f"analyze (rank 0 of {world})"
    # images per second and the time left come from tqdm's rate; smoothing follows recent batches
    return tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.1)


def _analyze_batch(
    pairs: list[tuple[str, nn.Module]],
    images: torch.Tensor,
    accs: Mapping[str, Accumulator],
    joint: Accumulator,
    opts: _Options,
    erf_names: dict[str, list[str]],
) -> None:
    """Every model's statistics of one batch (B, 3, H, W), and the model-by-model HSIC sums."""
    b = int(images.shape[0])
    model_maps: list[Optional[list[torch.Tensor]]] = []
    for name, model in pairs:
        device, dtype = _device_dtype(model)
        batch = images.to(device=device, dtype=dtype or images.dtype, non_blocking=True)
        acc = accs[name]
        cap = capture(model, batch, attention=opts.attention, layers=opts.layers)
        check_finite(cap, name)
        with torch.no_grad():
            model_maps.append(add_batch(cap, acc, opts.cutoff, opts.bins, opts.chunk_size, opts.cka))
        del cap
        if opts.erf:
            if name not in erf_names:
                erf_names[name] = erf_layers(opts.erf, acc.meta)
            add_erf(model, batch, erf_names[name], {m["name"]: i for i, m in enumerate(acc.meta)}, acc)
        acc.n += b
        acc.image_size = [int(images.shape[-2]), int(images.shape[-1])]
    if opts.cka and len(pairs) > 1:
        add_joint_cka(joint, model_maps, b)


def _stream(
    pairs: list[tuple[str, nn.Module]],
    source: Source,
    accs: Mapping[str, Accumulator],
    joint: Accumulator,
    resume: ResumeState,
    start: int,
    opts: _Options,
    bar: bool,
) -> Optional[torch.Tensor]:
    """Read ``source`` from ``start`` into the accumulators (models in eval mode, restored after), saving the
    state every ``save_every`` batches and at the end; returns the first images (at most 4) for the method figures
    (those of the interrupted run when it had read them: a resume with nothing left to read still has its figures)."""
    modes = [m.training for _, m in pairs]
    erf_names: dict[str, list[str]] = {}
    progress, batches, position = None, 0, start
    try:
        for _, m in pairs:
            m.eval()
        for images, position in source.batches(start):  # noqa: B020  (position: where a resume continues)
            if images.device.type == "meta" or not bool(torch.isfinite(images).all()):
                raise FreqkitError(
                    "analyze: the images hold NaN or inf (or are on the meta device); pass finite real-valued images"
                )
            if resume.first_images is None and opts.methods:
                resume.first_images = images[:4].detach().cpu()
            if progress is None and bar:  # after the first batch arrived: a source that fails at once prints one line
                progress = _progress_bar(source.total, accs[pairs[0][0]].n, rank_world()[1])
            _analyze_batch(pairs, images, accs, joint, opts, erf_names)
            batches += 1
            if progress is not None:
                progress.update(int(images.shape[0]))
            if batches % opts.save_every == 0:
                resume.save(position, accs, joint)
        resume.save(position, accs, joint)
    finally:
        for (_, m), mode in zip(pairs, modes):
            m.train(mode)
        if progress is not None:
            progress.close()
    return resume.first_images


def _start(device: Optional[str], pairs: list[tuple[str, nn.Module]], distributed: Optional[bool]) -> DistInfo:
    """Start torch.distributed under torchrun; with ``device``, move every model there (cuda: this process's GPU)."""
    info = init_distributed(device if device is not None else str(_device_dtype(pairs[0][1])[0]), distributed)
    if device is not None:
        for _, m in pairs:
            m.to(info.device)
    return info


def analyze(
    models: Models,
    data: Any = "builtin",
    *,
    pretrained: bool = False,
    checkpoint: Checkpoints = None,
    device: Optional[str] = None,
    attention: bool = False,
    layers: Optional[Sequence[str]] = None,
    cutoff: float = 0.5,
    bins: int = 16,
    batch_size: Optional[int] = None,
    num_workers: int = 0,
    max_images: Optional[int] = None,
    img_size: Union[int, Sequence[int], None] = None,
    cka: bool = True,
    erf: Union[bool, Sequence[str]] = False,
    methods: bool = True,
    chunk_size: int = 256,
    progress: bool = False,
    state_dir: Union[str, Path, None] = None,
    save_every: int = 50,
    resume: bool = False,
    info: Optional[Mapping[str, Mapping[str, Any]]] = None,
    settings: Optional[Mapping[str, Any]] = None,
    check_headers: bool = True,
    distributed: Optional[bool] = None,
) -> Report:
    """Spectral diagnostics of ``models`` over the images of ``data`` -> :class:`Report`.

    ``data``: a tensor (B, 3, H, W); a Dataset of images (3, H, W) or (image, target) items; a
    DataLoader or any iterable of (B, 3, H, W) batches (or (images, targets) pairs); a folder path,
    read recursively and preprocessed with the first model's timm data config (resize, centre crop,
    mean / std; ``img_size`` overrides the size); or "builtin" (scikit-image's photographs).
    ``max_images`` limits the count (default all); ``batch_size`` (default: a tensor at once, else 16)
    and ``num_workers`` apply to tensors, Datasets and folders.

    ``models`` is one model, a dict name -> model, or a list (named by architecture; repeats get
    ``-2``...). A name (timm, freqkit, or a spec such as ``vit_mini+fdam``) is built with
    :func:`freqkit.models.create` at ``img_size``: with timm's weights (``pretrained``), with a
    ``checkpoint`` (one path for one name, a list with one per name in order, or a dict name -> path),
    else at random init, seeded so that every run and process builds the same weights (the caller's RNG
    is left as it was). Every model sees every batch, in eval mode (restored after) on its own device and
    dtype; ``device`` ("auto", "cpu", "cuda", ...) first moves every model there (under torchrun,
    "auto" / "cuda" is this process's GPU). ``attention`` adds the attention responses and per-head maps; ``layers`` picks module
    names (default: every ViT block or stage); ``cka`` the linear CKA matrices (layer x layer, and
    model x model with several models); ``erf`` the effective receptive field of 4 evenly spaced
    layers (True) or of the named layers (one backward pass per layer and batch). ``methods`` adds the
    figures of what FDAM / SPAM modules apply (AttInv modulation, FreqScale gain, SPAM filters, AttInv
    responses) and one layer's feature maps, from the first 4 images of the first batch; only the kinds
    whose modules the models have are computed (``Report.methods["applies"]``).

    Under torchrun (WORLD_SIZE > 1 in the environment) the process group is started here if it is not
    yet (and ended on return), each rank analyses its shard and the statistics are summed over ranks; every rank returns the same report
    (``distributed=False``: this process analyses all of ``data`` alone, on its own device). With ``state_dir`` the
    statistics are saved there (atomically, one file per rank) every ``save_every`` batches and at
    the end; ``resume`` continues from them, and refuses statistics of other work (other models, settings,
    image files or process count). ``info`` adds per-model facts, ``settings`` run settings. ``check_headers``
    (folders): read every image's header before the first batch, so a bad file fails at once (off for huge
    folders). When one rank fails, every rank stops with one line naming it.
    """
    _check_size(img_size)
    pairs, built = _named_models(models, img_size, pretrained, checkpoint)
    _check_options(pairs, cutoff, bins, save_every, resume, state_dir)
    dist_info = _start(device, pairs, distributed)
    failed = True
    try:
        report = _analyze(
            pairs,
            built,
            data,
            device=None if device is None else str(dist_info.device),
            alone=distributed is False,
            options=_Options(
                attention=bool(attention),
                layers=layers,
                cutoff=float(cutoff),
                bins=int(bins),
                chunk_size=int(chunk_size),
                cka=bool(cka),
                erf=erf,
                methods=bool(methods),
                save_every=int(save_every),
            ),
            batch_size=batch_size,
            num_workers=num_workers,
            max_images=max_images,
            img_size=img_size,
            progress=progress,
            state_dir=state_dir,
            resume=resume,
            info=info,
            settings=settings,
            check_headers=check_headers,
        )
        failed = False
        return report
    finally:
        cleanup_distributed(dist_info, failed)  # after a failure, without waiting on peers that may be gone


def _analyze(
    pairs: list[tuple[str, nn.Module]],
    built: dict[str, dict[str, str]],
    data: Any,
    *,
    device: Optional[str],
    alone: bool,
    options: _Options,
    batch_size: Optional[int],
    num_workers: int,
    max_images: Optional[int],
    img_size: Any,
    progress: bool,
    state_dir: Any,
    resume: bool,
    info: Optional[Mapping[str, Mapping[str, Any]]],
    settings: Optional[Mapping[str, Any]],
    check_headers: bool,
) -> Report:
    """:func:`analyze` once the models are built and the process group (if any) is up."""
    rank, world = (0, 1) if alone else rank_world()  # alone: even inside the caller's own process group
    accs = {name: Accumulator() for name, _ in pairs}
    joint = Accumulator()
    call = {
        "cutoff": options.cutoff,
        "bins": options.bins,
        "attention": options.attention,
        "layers": None if options.layers is None else list(options.layers),
        "cka": options.cka,
        "erf": options.erf if isinstance(options.erf, bool) else list(options.erf),
        "max_images": max_images,
        "img_size": img_size,
    }
    # a rank that fails stops every rank, before the statistics are summed
    with together("analyze") if world > 1 else contextlib.nullcontext():
        source = make_source(
            data,
            batch_size=batch_size,
            num_workers=num_workers,
            max_images=max_images,
            model=pairs[0][1],
            img_size=img_size,
            rank=rank,
            world=world,
            check_headers=check_headers,
        )
        state = ResumeState(None if state_dir is None else Path(state_dir), rank, world, source.fingerprint, call, dict(pairs))
        position = state.load(accs, joint) if resume else 0
        first_images = _stream(pairs, source, accs, joint, state, position, options, bar=progress and rank == 0)
    if world > 1:
        all_reduce({**accs, _JOINT: joint})
    total = accs[pairs[0][0]].n
    if total == 0:
        raise FreqkitError("analyze got no images; pass a non-empty tensor, Dataset, DataLoader or folder")
    image_size = accs[pairs[0][0]].image_size
    extra = {name: {**built.get(name, {}), **dict((info or {}).get(name, {}))} for name, _ in pairs}
    reports = [
        model_report(name, accs[name], options.bins, model_info(m, accs[name], image_size, options.attention, extra[name]))
        for name, m in pairs
    ]
    all_settings = run_settings(
        {**call, "batch_size": batch_size},
        image_size=image_size,
        num_images=total,
        images=source.describe,
        processes=world,
        models=[n for n, _ in pairs],
    )
    if device is not None:
        all_settings["device"] = device
    if built:
        all_settings["weights"] = {k: v["weights"] for k, v in built.items()}
    all_settings.update(dict(settings or {}))
    method_data = None
    if options.methods and first_images is not None:
        from freqkit.analysis.methods import method_figures_data

        dev, dtype = _device_dtype(pairs[0][1])
        x = first_images.to(device=dev, dtype=dtype or first_images.dtype)
        method_data = method_figures_data(dict(pairs), x, num_images=int(x.shape[0]))
    return Report(
        models=reports, settings=all_settings, model_cka=joint_cka(joint, accs, [n for n, _ in pairs]), methods=method_data
    )
