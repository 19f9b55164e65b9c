"""``freqkit analyze``: per-layer spectral diagnostics of one or more models, written as a report.

Runs offline by default: ``deit_tiny_patch16_224`` at random init on scikit-image's shipped
photographs. Writes ``report.json``, ``report.html`` and ``figures/*.png`` under ``--out``.
torch and timm are imported inside :func:`run` only, so ``freqkit --help`` stays instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from freqkit.errors import FreqkitError

DEFAULT_MODEL = "deit_tiny_patch16_224"

EXAMPLES = """examples:
  freqkit analyze                                   # deit_tiny, random init, built-in images
  freqkit analyze deit_small_patch16_224 --pretrained --images ./val_imgs --attention
  freqkit analyze vit_tiny_patch16_224 deit_tiny_patch16_224 --checkpoint a.safetensors b.safetensors
"""


def add_parser(subparsers: Any, name: str = "analyze") -> argparse.ArgumentParser:
    """Register the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        name,
        help="per-layer spectral diagnostics of models (report.json, report.html, figures)",
        description="Per-layer spectral diagnostics (high-frequency ratio, relative log amplitude, effective rank, "
        "token similarity, cross-layer similarity, attention responses) of one or more timm / freqkit models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"timm or freqkit model names (default: {DEFAULT_MODEL})")
    p.add_argument("--images", default="builtin", metavar="DIR", help="folder of images (searched recursively), or 'builtin' "
                   "for scikit-image's shipped photographs (default)")
    p.add_argument("--max-images", type=int, default=64, metavar="N", help="use at most N images of the folder (default 64)")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH",
                   help="one .safetensors / weights-only .pth per model, in the order of the models")
    p.add_argument("--pretrained", action="store_true", help="load timm's pretrained weights (needs them cached, or network access)")
    p.add_argument("--img-size", nargs="+", type=int, default=[224, 224], metavar="N", help="image size H W (or one N for N x N; default 224 224)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    p.add_argument(
        "--attention",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="capture attention maps for the local and global attention responses (slower); "
        "default: on for the built-in demo run without model names, off otherwise",
    )
    p.add_argument("--cutoff", type=float, default=0.5, help="normalized radius above which energy counts as high frequency (default 0.5)")
    p.add_argument("--bins", type=int, default=16, help="rings of the radial profiles (default 16)")
    p.add_argument("--out", default="freqkit-report", metavar="DIR", help="output folder (default freqkit-report/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    p.set_defaults(run=run)
    return p


def _image_size(values: list[int]) -> tuple[int, int]:
    if len(values) not in (1, 2):
        raise FreqkitError(f"--img-size takes H W or one N, got {len(values)} numbers; e.g. --img-size 224 224")
    h, w = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    if h < 1 or w < 1:
        raise FreqkitError(f"--img-size {h} {w} must be positive; e.g. --img-size 224 224")
    return h, w


def _check_names(names: list[str]) -> None:
    import difflib

    import timm

    import freqkit.models  # noqa: F401  (registers freqkit's models with timm)

    known = None
    for name in names:
        if timm.is_model(name):
            continue
        known = known or timm.list_models()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"list names with: python -c \"import timm; print(timm.list_models('*{name[:4]}*'))\""
        raise FreqkitError(f"unknown model {name!r}; {hint}")


def _device(spec: str):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise FreqkitError(f"--device {spec!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FreqkitError(f"--device {spec} asked for but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FreqkitError(f"--device {spec} asked for but MPS is not available here; use --device cpu")
    return dev


def _online(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _create(name: str, pretrained: bool, size: tuple[int, int]):
    """timm.create_model with the image size for models that take one (ViTs), without for others."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, img_size=size)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(name, pretrained=pretrained)


def _create_pretrained(name: str, size: tuple[int, int]):
    online = _online()
    patched = None
    if not online:
        # offline: look in the local cache only, instead of minutes of hub retries
        try:
            import huggingface_hub.constants as hf_constants

            patched, hf_constants.HF_HUB_OFFLINE = hf_constants.HF_HUB_OFFLINE, True
        except ImportError:  # pragma: no cover
            hf_constants = None
    try:
        return _create(name, True, size)
    except Exception as err:  # hub / url / cfg errors all mean "no weights"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        where = "they are not in the local cache and huggingface.co cannot be reached (offline)" if not online else f"download failed ({first})"
        raise FreqkitError(
            f"--pretrained: no pretrained weights for {name!r}: {where}; fetch them once with network access, "
            "or pass --checkpoint PATH (or drop --pretrained for random init)"
        ) from None
    finally:
        if patched is not None:
            hf_constants.HF_HUB_OFFLINE = patched


def _check_patch(model, name: str, size: tuple[int, int]) -> None:
    pe = getattr(model, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None:
        return
    ph, pw = (ps, ps) if isinstance(ps, int) else (int(ps[0]), int(ps[1]))
    if size[0] % ph or size[1] % pw:
        sug = (max(1, int(size[0] / ph + 0.5)) * ph, max(1, int(size[1] / pw + 0.5)) * pw)
        raise FreqkitError(
            f"image size {size[0]}x{size[1]} is not divisible by the patch size {ph}x{pw} of {name}; "
            f"use e.g. --img-size {sug[0]} {sug[1]}"
        )


def _load(path: str, model, name: str) -> None:
    import importlib

    from freqkit.models.checkpoint import load_checkpoint

    # the family's own filter adapts official layouts (and resamples position embeddings)
    family = importlib.import_module(type(model).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    try:
        load_checkpoint(model, path, filter_fn=filter_fn)
    except FreqkitError as err:
        raise FreqkitError(f"--checkpoint {path} for {name}: {err}") from None


def run(args: argparse.Namespace) -> int:
    """Build the models, load the images, analyze, print the table and write the report."""
    names = list(args.models) or [DEFAULT_MODEL]
    size = _image_size(args.img_size)
    checkpoints = list(args.checkpoint)
    if checkpoints and len(checkpoints) != len(names):
        raise FreqkitError(
            f"got {len(checkpoints)} --checkpoint files for {len(names)} models; pass one checkpoint per model, in the same order"
        )
    if checkpoints and args.pretrained:
        raise FreqkitError("--pretrained and --checkpoint both give weights; pass only one of them")
    if args.batch_size < 1 or args.max_images < 1:
        raise FreqkitError("--batch-size and --max-images must be positive integers")
    for path in checkpoints:
        if not Path(path).is_file():
            raise FreqkitError(f"--checkpoint {path} does not exist or is not a file; check the path")

    import torch

    from freqkit.analysis import analyze
    from freqkit.data.builtin import builtin_images, folder_images

    _check_names(names)
    # random-init models (no --pretrained / --checkpoint) give the same report on every run
    torch.manual_seed(0)
    device = _device(args.device)
    if args.images == "builtin":
        images, source = builtin_images(size), "built-in scikit-image photographs"
    else:
        images, source = folder_images(args.images, size, limit=args.max_images), f"folder {args.images}"

    models: dict[str, torch.nn.Module] = {}
    info: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        if args.pretrained:
            model = _create_pretrained(name, size)
            weights = "pretrained (timm)"
        else:
            try:
                model = _create(name, False, size)
            except FreqkitError:
                raise
            except Exception as err:  # a model that cannot be built at this size, bad kwargs...
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                raise FreqkitError(f"cannot build {name} at {size[0]}x{size[1]} ({first}); try another --img-size or model") from None
            weights = "random init (no pretrained weights)"
        _check_patch(model, name, size)
        if checkpoints:
            _load(checkpoints[i], model, name)
            weights = f"checkpoint {checkpoints[i]}"
        key = name if name not in models else f"{name}-{i + 1}"
        models[key] = model.to(device).eval()
        info[key] = {"model": name, "weights": weights}

    if not args.quiet:
        print(f"freqkit analyze: {len(images)} images ({source}) at {size[0]}x{size[1]} on {device}")
        for key, meta in info.items():
            print(f"  {key}: {meta['weights']}")
        if any(meta["weights"].startswith("random") for meta in info.values()):
            print("  note: weights are RANDOM (untrained); pass --pretrained or --checkpoint for a trained model")
        sys.stdout.flush()
    settings = {"images": source, "device": str(device), "weights": {k: v["weights"] for k, v in info.items()}}
    report = analyze(
        models,
        images,
        attention=args.attention if args.attention is not None else not args.models,
        cutoff=args.cutoff,
        bins=args.bins,
        batch_size=args.batch_size,
        progress=not args.quiet,
        info=info,
        settings=settings,
    )
    out = Path(args.out)
    try:
        paths = report.save(out)
    except OSError as err:
        raise FreqkitError(f"cannot write the report to {str(out)!r} ({err.strerror or err}); pass a writable --out DIR") from None
    if not args.quiet:
        print()
        print(report.table(), end="")
        print(f"wrote {paths['json']}, {paths['html']} and {len(paths['figures'])} figures in {out / 'figures'}")
    return 0
