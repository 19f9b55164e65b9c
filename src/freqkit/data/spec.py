"""The data spec: one string naming a dataset, parsed into train and validation splits.

Grammar (documented in ``freqkit train --help``)::

    shapes[:key=value,...]      built-in segmentation scenes; keys: size (64), train (2000), val (128), seed (0)
    textures[:key=value,...]    built-in frequency-band textures; keys: size (64), train (2000), val (256), seed (0), classes (6)
    imagefolder:ROOT            ROOT/{train,val}/<class>/*.jpg (train/ or training/; val/, validation/ or valid/)
    ade20k:ROOT                 ROOT = ADEChallengeData2016 or its parent (images/ and annotations/{training,validation})
    pairs:IMAGES:MASKS          image and mask folders matched by file stem; train/ and val/ sub-folders in both,
                                or no sub-folders (every 10th pair, sorted by name, is held out for validation)

The data ``seed`` of a built-in set is independent of the training seed, so runs with different
training seeds see the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from freqkit.errors import FreqkitError, ParameterError

__all__ = ["DataSpec", "DataInfo", "parse_data_spec", "build_datasets", "DATA_KINDS", "DATA_HELP"]

DATA_KINDS = {
    "shapes": "segmentation",
    "textures": "classification",
    "imagefolder": "classification",
    "ade20k": "segmentation",
    "pairs": "segmentation",
}
_BUILTIN_KEYS = {"shapes": {"size", "train", "val", "seed"}, "textures": {"size", "train", "val", "seed", "classes"}}
_DEFAULT_SIZE = {"shapes": 64, "textures": 64, "imagefolder": 224, "ade20k": 512, "pairs": 512}

DATA_HELP = (
    "dataset: shapes[:size=64,train=2000,val=128,seed=0] | textures[:classes=6,size=64,...] | imagefolder:ROOT "
    "(ROOT/train/<class>/*, ROOT/val/<class>/*) | ade20k:ROOT (ADEChallengeData2016 layout) | pairs:IMAGES:MASKS "
    "(matched by file stem; train/ and val/ sub-folders, or every 10th pair held out)"
)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec string: its kind, paths and built-in options."""

    kind: str
    paths: tuple[str, ...] = ()
    options: dict[str, int] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """'segmentation' or 'classification'."""
        return DATA_KINDS[self.kind]


@dataclass
class DataInfo:
    """What the model needs to know about a dataset."""

    name: str
    task: str
    num_classes: int
    img_size: int
    classes: tuple[str, ...]


def parse_data_spec(spec: str) -> DataSpec:
    """Parse a data spec string (see the module docstring) into a :class:`DataSpec`."""
    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError("data", f"is empty; {DATA_HELP}")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in DATA_KINDS:
        raise ParameterError("data", f"{spec!r}: unknown dataset {kind!r}; {DATA_HELP}")
    if kind in _BUILTIN_KEYS:
        options: dict[str, int] = {}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in _BUILTIN_KEYS[kind]:
                raise ParameterError(
                    "data", f"{spec!r}: bad option {item!r}; {kind} takes key=value among {sorted(_BUILTIN_KEYS[kind])}"
                )
            try:
                options[key] = int(value)
            except ValueError:
                raise ParameterError("data", f"{spec!r}: option {key} must be an integer, got {value!r}") from None
        return DataSpec(kind, (), options)
    if kind == "pairs":
        parts = rest.split(":")
        if len(parts) != 2 or not all(parts):
            raise ParameterError("data", f"{spec!r}: write pairs:IMAGES_DIR:MASKS_DIR (two folders, file stems matched)")
        return DataSpec(kind, (parts[0], parts[1]))
    if not rest:
        raise ParameterError("data", f"{spec!r} needs a folder: write {kind}:PATH")
    return DataSpec(kind, (rest,))


# images are decoded, resized and batched whole: far above 4096 px, memory runs out deep in the data code
MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 4096

# a class count read off the masks above this is almost surely a stray value (e.g. 60000 in a 16-bit mask);
# it would also size the mIoU confusion matrix (K x K) beyond memory
MAX_INFERRED_CLASSES = 1024


def _infer_num_classes(ds) -> int:
    import numpy as np

    from freqkit.data.folders import IGNORE_INDEX, _open_mask

    top = -1
    for _, mask_path in ds.pairs:
        raw = _open_mask(mask_path)
        valid = raw[raw != IGNORE_INDEX]
        if valid.size:
            top = max(top, int(valid.max()))
            if int(valid.min()) < 0:
                raise FreqkitError(f"mask {mask_path} has a negative label; labels must be 0..K-1 (255 = ignore)")
            if top >= MAX_INFERRED_CLASSES:
                raise FreqkitError(
                    f"mask {mask_path} has label {top}, which would mean {top + 1} classes (more than {MAX_INFERRED_CLASSES} "
                    "are not inferred); fix the mask, or declare the class count with num_classes"
                )
    if top < 0:
        raise FreqkitError("every training mask is ignore (255) only; nothing to learn from")
    return int(np.int64(top) + 1)


def build_datasets(
    spec: str | DataSpec,
    task: Optional[str] = None,
    img_size: Optional[int] = None,
    num_classes: Optional[int] = None,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val"),
    crop_size: Optional[int] = None,
    img_scale: Optional[tuple[int, int]] = None,
) -> tuple[dict[str, Dataset], DataInfo]:
    """Datasets for ``splits`` and the dataset's :class:`DataInfo`; ``seed`` drives training augmentation.

    ``crop_size`` (ade20k and pairs only) switches to the paper protocol: training items from
    :class:`freqkit.data.transforms.SegTrainTransform` at crop_size x crop_size (random rescale, crop with
    cat_max_ratio 0.75, flip, photometric distortion, 255 padding) and evaluation items at their original size;
    ``img_size`` is then the crop size; ``img_scale`` = (long, short) rescale bounds (default (4 crop, crop)).
    Without it every item is resized to img_size x img_size.

    ``task`` (if given) must match the dataset's; ``num_classes`` (if given) must match it (for
    ``pairs`` it sets the class count, which is otherwise the largest training label + 1).
    """
    from freqkit.data.folders import SPLIT_NAMES, ImageFolderDataset, ade20k_dataset, find_split_dir, pairs_dataset
    from freqkit.data.synthetic import ShapesDataset, TexturesDataset

    ds_spec = spec if isinstance(spec, DataSpec) else parse_data_spec(spec)
    name = spec if isinstance(spec, str) else ds_spec.kind
    if task is not None and task != ds_spec.task:
        raise ParameterError(
            "data", f"{name} is a {ds_spec.task} dataset but the task is {task}; drop task or pick a {task} dataset"
        )
    if crop_size is not None:
        if ds_spec.kind not in ("ade20k", "pairs"):
            raise FreqkitError(f"crop_size applies to ade20k and pairs data, not {ds_spec.kind}; drop crop_size")
        if img_size is not None and int(img_size) != int(crop_size):
            raise FreqkitError(f"img_size {img_size} contradicts crop_size {crop_size}; with crop_size give only that")
        img_size = int(crop_size)
    size = ds_spec.options.get("size")
    if img_size is not None and size is not None and int(img_size) != size:
        raise ParameterError("img_size", f"{img_size} contradicts size={size} in data {name}; give the size once")
    size = int(img_size if img_size is not None else size if size is not None else _DEFAULT_SIZE[ds_spec.kind])
    if size < MIN_IMG_SIZE:
        raise FreqkitError(f"image size {size} is too small; img_size must be at least {MIN_IMG_SIZE} pixels")
    if size > MAX_IMG_SIZE:
        raise FreqkitError(f"image size {size} is too large; img_size must be at most {MAX_IMG_SIZE} pixels")
    out: dict[str, Dataset] = {}
    opts = ds_spec.options
    transform = None
    if crop_size is not None:
        from freqkit.data.transforms import SegTrainTransform

        transform = SegTrainTransform(crop_size=size, scale=tuple(img_scale) if img_scale else (4 * size, size))
    if ds_spec.kind in ("shapes", "textures"):
        for split in splits:
            kw = dict(split=split, size=size, length=opts.get(split), seed=opts.get("seed", 0))
            if ds_spec.kind == "shapes":
                out[split] = ShapesDataset(**kw)
            else:
                out[split] = TexturesDataset(**kw, num_classes=opts.get("classes", 6))
        first = next(iter(out.values()))
        found = first.num_classes
        classes = tuple(first.classes)
    elif ds_spec.kind == "imagefolder":
        root = Path(ds_spec.paths[0])
        if not root.is_dir():
            raise FreqkitError(f"image folder {root} does not exist; pass imagefolder:ROOT with ROOT/train/<class>/*.jpg")
        classes_seen = None
        for split in ("train", "val"):
            folder = find_split_dir(root, split)
            if folder is None:
                names = " or ".join(f"{n}/" for n in SPLIT_NAMES[split])
                raise FreqkitError(f"{root} has no {split} split: expected a sub-folder {names} holding <class>/*.jpg")
            ds = ImageFolderDataset(folder, size=size, train=split == "train", seed=seed, classes=classes_seen)
            classes_seen = ds.classes
            if split in splits:
                out[split] = ds
        found, classes = len(classes_seen), tuple(classes_seen)
    elif ds_spec.kind == "ade20k":
        for split in splits:
            if transform is not None:
                out[split] = ade20k_dataset(
                    ds_spec.paths[0], split, train=split == "train", seed=seed, crop_size=size, scale=transform.scale
                )
            else:
                out[split] = ade20k_dataset(ds_spec.paths[0], split, size=size, train=split == "train", seed=seed)
        found, classes = 150, tuple(str(i) for i in range(150))
    else:  # pairs
        images, masks = ds_spec.paths
        k = num_classes
        if k is None:
            probe = pairs_dataset(images, masks, "train", num_classes=256, size=size)
            k = _infer_num_classes(probe)
        for split in splits:
            out[split] = pairs_dataset(
                images, masks, split, num_classes=k, size=size, train=split == "train", seed=seed, transform=transform
            )
        found, classes = k, tuple(str(i) for i in range(k))
    if num_classes is not None and int(num_classes) != found:
        raise ParameterError(
            "data",
            f"{name} has {found} classes but {num_classes} were asked for (num_classes or the checkpoint's head); "
            "make them match",
        )
    return out, DataInfo(name=name, task=ds_spec.task, num_classes=found, img_size=size, classes=classes)
