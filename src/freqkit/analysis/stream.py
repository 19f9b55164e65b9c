"""Image sources for :func:`freqkit.analyze`: tensors, Datasets, DataLoaders, iterables and image folders,
sharded over torch.distributed ranks, with resumable positions and atomically saved statistics.

Sharding: a source with indexable images (a tensor, a Dataset, a folder) gives rank r the images
r, r + W, r + 2W, ... of its (``max_images``-limited) index list, so no image is counted twice and
none is dropped. A DataLoader or other iterable is read in full by every rank, which keeps batch k
when k mod W == r (its workers load every batch, so prefer passing the Dataset).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from freqkit.data.folders import IMG_EXTENSIONS, files_digest
from freqkit.errors import FreqkitError

__all__ = [
    "ImageFiles",
    "image_folder",
    "list_images",
    "data_transform",
    "Source",
    "make_source",
    "atomic_save",
    "load_state",
    "resized_size",
]

# label maps of segmentation layouts (ADE20K annotations/, Cityscapes-style masks/) are not images to analyse
_SKIP_DIRS = {"annotations", "masks"}

DEFAULT_BATCH = 16


def list_images(folder: Union[str, os.PathLike]) -> list[Path]:
    """Every image under ``folder`` (recursive, sorted; skips ``annotations/`` and ``masks/`` folders of label maps)."""
    root = Path(folder)
    if not root.is_dir():
        raise FreqkitError(f"image folder {str(root)!r} does not exist or is not a folder; pass a folder of .jpg/.png images")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d.lower() not in _SKIP_DIRS)
        # regular files only: a named pipe (or a socket) named like an image would block the reader forever
        paths += [
            Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in IMG_EXTENSIONS and (Path(dirpath) / f).is_file()
        ]
    paths.sort()
    if not paths:
        raise FreqkitError(
            f"image folder {str(root)!r} holds no images ({', '.join(IMG_EXTENSIONS)}); add images or pass another folder"
        )
    return paths


def data_transform(model: Optional[torch.nn.Module] = None, img_size: Union[int, Sequence[int], None] = None) -> Callable:
    """timm's evaluation transform for ``model`` (resize, centre crop, mean / std of its data config); ``img_size`` overrides the crop size."""
    from timm.data import create_transform, resolve_data_config

    args: dict[str, Any] = {}
    if img_size is not None:
        h, w = (int(img_size), int(img_size)) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[-1]))
        args["input_size"] = (3, h, w)
    cfg = resolve_data_config(args, model=model)
    return create_transform(**cfg, is_training=False)


class ImageFiles(Dataset):
    """Images read from ``paths`` through ``transform`` (a PIL image -> (3, H, W) tensor).

    Files are decoded as training decodes them (:func:`freqkit.data.folders.read_image`): 16-bit images
    are scaled to [0, 1], not clipped; float images are checked; decompression bombs and images whose
    resize would exceed ``FREQKIT_MAX_RESIZED_PIXELS`` are one line, refused before any resize.
    """

    def __init__(self, paths: Sequence[Union[str, os.PathLike]], transform: Callable) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def check_headers(self, indices: Optional[Sequence[int]] = None) -> None:
        """Read the header of every image (of ``indices``): unreadable files, bombs and oversized resizes fail now."""
        from freqkit.data.folders import image_header
        from freqkit.limits import check_resized_pixels

        for i in range(len(self.paths)) if indices is None else indices:
            size = image_header(self.paths[i])
            check_resized_pixels(self.paths[i], size, resized_size(self.transform, size))

    def __getitem__(self, index: int) -> torch.Tensor:
        from freqkit.data.folders import image_tensor, read_image
        from freqkit.limits import check_resized_pixels

        path = self.paths[index]
        im = read_image(path)
        check_resized_pixels(path, im.size, resized_size(self.transform, im.size))
        # 16-bit and float images are mode 'F' in [0, 1]: timm's transform takes them as (3, H, W) float tensors
        return self.transform(image_tensor(im) if im.mode == "F" else im)


def resized_size(transform: Callable, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a ``size`` = (width, height) image after the resize steps of ``transform`` (a Compose)."""
    w, h = float(size[0]), float(size[1])
    for t in getattr(transform, "transforms", [transform]):
        target = getattr(t, "size", None)
        if "Resize" not in type(t).__name__ or target is None:
            continue
        if isinstance(target, int) or len(target) == 1:
            s = float(target if isinstance(target, int) else target[0])
            ratio = s / max(1.0, min(w, h))  # shorter side to s, aspect kept (torchvision's Resize(int))
        else:
            # (h, w): at most the larger of the two ratios, whether it fills exactly or keeps the aspect
            ratio = max(float(target[0]) / max(h, 1.0), float(target[1]) / max(w, 1.0))
            if type(t).__name__ == "Resize":
                w, h = float(target[1]), float(target[0])
                continue
        w, h = w * ratio, h * ratio
    return max(1, round(w)), max(1, round(h))


def image_folder(
    folder: Union[str, os.PathLike], model: Optional[torch.nn.Module] = None, img_size: Union[int, Sequence[int], None] = None
) -> ImageFiles:
    """A Dataset of every image under ``folder`` (ImageNet class folders, ADE20K images/...), preprocessed with ``data_transform``."""
    return ImageFiles(list_images(folder), data_transform(model, img_size))


def _images_of(item: Any, where: str) -> torch.Tensor:
    """The image batch of a loader item: a tensor, or the first entry of a (images, targets, ...) tuple / list."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, dict):
        item = item.get("pixel_values", item.get("image", item.get("images")))
    if not isinstance(item, torch.Tensor) or item.ndim != 4:
        shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
        raise FreqkitError(f"{where} gave {shape}; items must be image batches (B, 3, H, W), or (images, targets) pairs")
    return item


@dataclass
class Source:
    """One rank's view of the images: ``batches(start)`` yields (images (b, 3, H, W), new position)."""

    describe: str
    total: Optional[int]  # images this rank will see (None: unknown)
    batches: Callable[[int], Iterator[tuple[torch.Tensor, int]]]
    fingerprint: dict[str, Any]


def _check_dataset_item(ds: Dataset) -> None:
    try:
        item = ds[0]
    except FreqkitError:
        raise
    except Exception as err:  # a dataset that cannot give its first item
        raise FreqkitError(
            f"data[0] failed ({type(err).__name__}: {str(err)[:120]}); pass a Dataset of images (3, H, W) or (image, target)"
        ) from None
    img = item[0] if isinstance(item, (tuple, list)) and item else item
    if not isinstance(img, torch.Tensor) or img.ndim != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise FreqkitError(
            f"data is a Dataset whose items are {shape}; items must be images (3, H, W) or (image, target) pairs (add a ToTensor transform)"
        )


def make_source(
    data: Any,
    *,
    batch_size: Optional[int],
    num_workers: int,
    max_images: Optional[int],
    model: Optional[torch.nn.Module],
    img_size: Union[int, Sequence[int], None],
    rank: int,
    world: int,
    check_headers: bool = True,
) -> Source:
    """Wrap any supported ``data`` as this rank's :class:`Source` (see the module docs)."""
    if max_images is not None and int(max_images) < 1:
        raise FreqkitError(f"max_images must be a positive int or None (all images), got {max_images!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise FreqkitError(f"batch_size must be a positive int, got {batch_size!r}")
    if int(num_workers) < 0:
        raise FreqkitError(f"num_workers must be >= 0, got {num_workers!r}")
    limit = None if max_images is None else int(max_images)

    if isinstance(data, (str, os.PathLike)):
        if str(data) == "builtin":
            from freqkit.data.builtin import builtin_images

            size = img_size if img_size is not None else _model_input_size(model)
            data = builtin_images(size)
            describe = "built-in scikit-image photographs"
        else:
            paths = list_images(data)
            ds = ImageFiles(paths, data_transform(model, img_size))
            src = _indexed(ds, len(ds), batch_size, num_workers, limit, rank, world)
            src.describe = f"folder {data}"
            used = paths if limit is None else paths[:limit]
            src.fingerprint.update(first=str(paths[0].name), last=str(paths[-1].name), files=files_digest(used, Path(data)))
            if check_headers:
                # this rank's images, header only: a bad file at the end of the folder fails before the first batch
                ds.check_headers(range(rank, len(used), world))
            return src
    else:
        describe = ""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or data.shape[0] < 1 or data.shape[1] != 3:
            raise FreqkitError(
                f"analyze expects images of shape (B, 3, H, W) with B >= 1, got {tuple(data.shape)}; add a batch dimension with x[None]"
            )
        n = data.shape[0] if limit is None else min(limit, data.shape[0])
        idx = list(range(rank, n, world))
        step = len(idx) if batch_size is None else int(batch_size)
        step = max(1, step)

        def tensor_batches(start: int) -> Iterator[tuple[torch.Tensor, int]]:
            for s in range(start, len(idx), step):
                sel = idx[s : s + step]
                yield data[sel[0] : sel[-1] + 1 : world], s + len(sel)

        return Source(describe or "tensor", len(idx), tensor_batches, {"kind": "tensor", "shape": list(data.shape), "images": n})
    if isinstance(data, DataLoader):
        return _iterable(data, limit, rank, world, "DataLoader", _sized_total(data, limit))
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        _check_dataset_item(data)
        return _indexed(data, len(data), batch_size, num_workers, limit, rank, world)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        return _iterable(data, limit, rank, world, "iterable", None)
    raise FreqkitError(
        f"analyze cannot read images from a {type(data).__name__}; pass a tensor (B, 3, H, W), a Dataset, a DataLoader, "
        "an iterable of batches or a folder path"
    )


def _model_input_size(model: Optional[torch.nn.Module]) -> tuple[int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or (3, 224, 224)
    return int(size[-2]), int(size[-1])


def _sized_total(loader: DataLoader, limit: Optional[int]) -> Optional[int]:
    try:
        n = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        return None
    return n if limit is None else min(n, limit)


def _indexed(
    ds: Dataset, length: int, batch_size: Optional[int], num_workers: int, limit: Optional[int], rank: int, world: int
) -> Source:
    n = length if limit is None else min(limit, length)
    idx = list(range(rank, n, world))
    step = int(batch_size or DEFAULT_BATCH)

    def batches(start: int) -> Iterator[tuple[torch.Tensor, int]]:
        rest = idx[start:]
        if not rest:
            return
        loader = DataLoader(
            Subset(ds, rest), batch_size=step, shuffle=False, num_workers=int(num_workers), pin_memory=torch.cuda.is_available()
        )
        pos = start
        for item in _reraise_one_line(loader):
            images = _images_of(item, "the Dataset")
            pos += images.shape[0]
            yield images, pos

    return Source(
        f"{type(ds).__name__} of {length} images", len(idx), batches, {"kind": type(ds).__name__, "images": n, "batch_size": step}
    )


def _iterable(data: Iterable, limit: Optional[int], rank: int, world: int, what: str, total: Optional[int]) -> Source:
    def batches(start: int) -> Iterator[tuple[torch.Tensor, int]]:
        seen = 0
        it = _reraise_one_line(data) if isinstance(data, DataLoader) else iter(data)
        for k, item in enumerate(it):
            if limit is not None and seen >= limit:
                return
            images = _images_of(item, f"the {what}")
            if limit is not None and seen + images.shape[0] > limit:
                images = images[: limit - seen]
            seen += images.shape[0]
            if k < start or k % world != rank:
                continue
            yield images, k + 1

    local = None if total is None else len(range(rank, total, world)) if world > 1 else total
    return Source(what, None if world > 1 else local, batches, {"kind": what, "images": total})


def _reraise_one_line(loader: Iterable) -> Iterator[Any]:
    """Iterate a DataLoader; a FreqkitError raised in a worker comes back as its own one-line message."""
    it = iter(loader)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except FreqkitError as err:
            lines = [line for line in str(err).splitlines() if line.strip()]
            last = lines[-1] if lines else str(err)
            for prefix in ("freqkit.errors.FreqkitError: ", "FreqkitError: "):
                if last.startswith(prefix):
                    last = last[len(prefix) :]
            raise FreqkitError(last) from None
        yield item


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save ``obj`` to ``path`` atomically (the bytes go through :func:`freqkit.io.atomic_write_bytes`)."""
    import io

    from freqkit.io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Read statistics written by :func:`atomic_save` (weights-only: tensors, numbers, strings, lists, dicts)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FreqkitError(
            f"saved statistics {str(path)!r} cannot be read ({type(err).__name__}); delete the file or run without resume"
        ) from None
