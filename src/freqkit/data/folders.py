"""Datasets read from disk: an image folder (classification), the ADE20K layout and image + mask pairs.

Every item is (image (3, S, S) float in [0, 1], target): a class index for classification, a mask
(S, S) int64 with 255 = ignore for segmentation. Training items get a random horizontal flip (and,
for classification, a random resized crop) drawn from a generator keyed by (seed, epoch, index), so
the data stream is a pure function of the step: resuming a run replays it exactly, whatever the
number of DataLoader workers. Call :meth:`set_epoch` before each epoch (the training loop does).
Evaluation items are resized (segmentation: image bilinear, mask nearest, to S x S) or resized and
centre-cropped (classification), without randomness. Segmentation datasets given a ``transform`` (the
paper pipeline of :mod:`freqkit.data.transforms`, the default of :func:`ade20k_dataset`) instead yield
training crops from it and evaluation items at their original size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from freqkit.errors import FreqkitError
from freqkit.limits import check_resized_pixels

if TYPE_CHECKING:
    from freqkit.data.transforms import SegTrainTransform

__all__ = [
    "IMG_EXTENSIONS",
    "MASK_EXTENSIONS",
    "ImageFolderDataset",
    "SegmentationFolderDataset",
    "ade20k_dataset",
    "pairs_dataset",
    "find_split_dir",
    "files_digest",
    "dataset_digest",
    "read_image",
    "image_tensor",
    "image_header",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "validation", "valid")}
IGNORE_INDEX = 255


def find_split_dir(root: Path, split: str) -> Optional[Path]:
    """The sub-folder of ``root`` holding ``split`` ('train' -> train/ or training/, 'val' -> val/, validation/), or None."""
    for name in SPLIT_NAMES[split]:
        if (root / name).is_dir():
            return root / name
    return None


def _list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def _image_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    # Pillow reports broken files as OSError, SyntaxError (bad PNG chunks) or ValueError, and huge ones as DecompressionBombError
    return (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _read_failure(kind: str, path: Path, err: BaseException) -> FreqkitError:
    from PIL import Image

    if isinstance(err, Image.DecompressionBombError):
        return FreqkitError(
            f"{kind} {path} has more pixels than Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} x 2); "
            "remove it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        )
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return FreqkitError(f"cannot read {kind} {path} ({first}); remove or replace the file")


def _high_depth_to_float(im, path: Path):
    """A 16-bit or 32-bit integer, or float, greyscale image -> a mode 'F' image with intensities in [0, 1].

    ``convert("RGB")`` would clip such images to nearly white or black. 16-bit (and 32-bit integer)
    images are divided by 65535; float images must already hold intensities in [0, 1].
    """
    from PIL import Image

    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise FreqkitError(f"float image {path} holds NaN or inf; replace it with a finite image")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise FreqkitError(
                f"float image {path} has values in [{lo:g}, {hi:g}]; freqkit reads float images as intensities in [0, 1]: "
                "rescale it, or save it as an 8- or 16-bit image"
            )
        return Image.fromarray(np.clip(a, 0.0, 1.0), mode="F")
    a = a.astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise FreqkitError(
            f"image {path} has {im.mode} values in [{lo}, {hi}], outside 16 bits; save it as an 8- or 16-bit image"
        )
    return Image.fromarray((a / 65535.0).astype(np.float32), mode="F")


def _open_rgb(path: Path, decode: bool = True):
    """An 8-bit 'RGB' image, or a mode 'F' greyscale image in [0, 1] for 16-bit and float files; errors are one line."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if not decode:
                return None
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                im.load()
                return _high_depth_to_float(im, path)
            return im.convert("RGB")
    except FreqkitError:
        raise
    except _image_errors() as err:
        raise _read_failure("image", path, err) from None


def read_image(path: Path):
    """An image file decoded as training reads it: 8-bit 'RGB', or mode 'F' in [0, 1] for 16-bit and float files."""
    return _open_rgb(Path(path))


def image_tensor(im) -> torch.Tensor:
    """A :func:`read_image` result -> (3, H, W) float32 in [0, 1]."""
    return _to_tensor(im)


def image_header(path: Path, kind: str = "image") -> tuple[int, int]:
    """(width, height) from the file header alone (no pixels decoded); unreadable files and bombs are one FreqkitError."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except _image_errors() as err:
        raise _read_failure(kind, Path(path), err) from None


def _open_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I") and not im.mode.startswith("I;16"):
                raise FreqkitError(
                    f"mask {path} has mode {im.mode}; masks must be single-channel integer label images (mode L, P, I;16 or I, one class index per pixel)"
                )
            return np.array(im, dtype=np.int64)
    except FreqkitError:
        raise
    except _image_errors() as err:
        raise _read_failure("mask", path, err) from None


def _to_tensor(im) -> torch.Tensor:
    """An 'RGB' image (H, W, 3 bytes) or a mode 'F' image in [0, 1] -> (3, H, W) float32 in [0, 1]."""
    if im.mode == "F":
        g = torch.from_numpy(np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0))
        return g.expand(3, *g.shape).contiguous()
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63 - 1))


class _Augmented(Dataset):
    """Shared epoch / seed bookkeeping for datasets with random training augmentation."""

    def __init__(self, train: bool, seed: int) -> None:
        self.train, self.seed, self.epoch = bool(train), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Pick the augmentation stream of ``epoch`` (deterministic per (seed, epoch, index))."""
        self.epoch = int(epoch)

    def with_seed(self, seed: int) -> "_Augmented":
        """The same files with the augmentation stream of ``seed`` (a shallow copy: the file lists are shared, not rebuilt)."""
        import copy

        twin = copy.copy(self)
        twin.seed, twin.epoch = int(seed), 0
        return twin


class ImageFolderDataset(_Augmented):
    """Classification images in ``root/<class>/<image>`` (torchvision / timm ImageFolder layout): (3, S, S), label."""

    task = "classification"

    def __init__(
        self, root: str | Path, size: int = 224, train: bool = False, seed: int = 0, classes: Optional[Sequence[str]] = None
    ) -> None:
        super().__init__(train, seed)
        self.root, self.size = Path(root), int(size)
        if not self.root.is_dir():
            raise FreqkitError(f"image folder {self.root} does not exist; pass imagefolder:ROOT with ROOT/train/<class>/*.jpg")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if classes is not None and list(classes) != found:
            raise FreqkitError(
                f"class folders of {self.root} ({len(found)}: {found[:5]}...) differ from the training split's "
                f"({len(classes)}: {list(classes)[:5]}...); every split needs the same class sub-folders"
            )
        self.classes = tuple(found)
        self.num_classes = len(found)
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            self.samples += [(p, label) for p in _list_images(self.root / name, IMG_EXTENSIONS)]
        if not self.samples:
            raise FreqkitError(f"no images found in {self.root} (expected {self.root}/<class>/*.jpg|png); the split is empty")

    def __len__(self) -> int:
        return len(self.samples)

    def check(self, decode: bool = True) -> None:
        """Open every image (``decode``: read all its pixels too); the first unreadable one raises a FreqkitError."""
        for path, _ in self.samples:
            size = image_header(path)
            if not self.train:
                check_resized_pixels(path, size, self._eval_size(*size))
            _open_rgb(path, decode=decode)

    def _eval_size(self, w: int, h: int) -> tuple[int, int]:
        """The evaluation resize (shorter side to size / 0.875, aspect kept) of a w x h image."""
        short = round(self.size / 0.875)
        return (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        im = _open_rgb(path)
        s = self.size
        if self.train:
            g = _item_generator(self.seed, self.epoch, index)
            w, h = im.size
            area = w * h * (0.35 + 0.65 * float(torch.rand((), generator=g)))
            ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand((), generator=g)))
            cw = min(w, max(1, round(math.sqrt(area * ratio))))
            ch = min(h, max(1, round(math.sqrt(area / ratio))))
            x0 = int(torch.randint(0, w - cw + 1, (), generator=g))
            y0 = int(torch.randint(0, h - ch + 1, (), generator=g))
            im = im.resize((s, s), resample=2, box=(x0, y0, x0 + cw, y0 + ch))  # 2 = bilinear
            x = _to_tensor(im)
            if float(torch.rand((), generator=g)) < 0.5:
                x = x.flip(-1)
            return x, label
        # evaluation: shorter side to s / 0.875, centre crop s x s
        nw, nh = self._eval_size(*im.size)
        check_resized_pixels(path, im.size, (nw, nh))
        im = im.resize((nw, nh), resample=2)
        left, top = (nw - s) // 2, (nh - s) // 2
        return _to_tensor(im.crop((left, top, left + s, top + s))), label


class SegmentationFolderDataset(_Augmented):
    """Image + mask pairs (matched by file stem): items (image (3, S, S), mask (S, S) int64, 255 = ignore).

    ``label_map`` turns raw mask values into class indices: 'identity' keeps them (255 stays ignore);
    'ade20k' maps 0 (other) to 255 and shifts every other value by -1. Any class index >= ``num_classes``
    (other than 255) raises a FreqkitError when its mask is read.
    """

    task = "segmentation"

    def __init__(
        self,
        images: str | Path,
        masks: str | Path,
        num_classes: int,
        size: int = 512,
        train: bool = False,
        seed: int = 0,
        label_map: str = "identity",
        files: Optional[Sequence[tuple[Path, Path]]] = None,
        transform: Optional["SegTrainTransform"] = None,
    ) -> None:
        super().__init__(train, seed)
        self.size, self.num_classes, self.label_map = int(size), int(num_classes), label_map
        # with a transform (the protocol pipeline): training items are transform(image, mask), evaluation items keep
        # their original size; without: every item is resized to size x size
        self.transform = transform
        self.classes = tuple(str(i) for i in range(self.num_classes))
        if label_map not in ("identity", "ade20k"):
            raise FreqkitError(f"unknown label_map {label_map!r}; use 'identity' or 'ade20k'")
        self.pairs = list(files) if files is not None else match_pairs(Path(images), Path(masks))
        if not self.pairs:
            raise FreqkitError(f"no image/mask pairs in {images} and {masks}; the split is empty")

    def __len__(self) -> int:
        return len(self.pairs)

    def check(self, decode: bool = True) -> None:
        """Open every image and mask (``decode``: read them fully and check sizes and class indices); first problem raises."""
        from PIL import Image

        for img_path, mask_path in self.pairs:
            if not decode:
                # headers only (cheap): sizes and the mask's mode are known without decoding a pixel
                size = image_header(img_path)
                try:
                    with Image.open(mask_path) as mask:
                        mode, mask_size = mask.mode, mask.size
                except _image_errors() as err:
                    raise _read_failure("mask", mask_path, err) from None
                if mode not in ("L", "P", "I") and not mode.startswith("I;16"):
                    raise FreqkitError(
                        f"mask {mask_path} has mode {mode}; masks must be single-channel integer label images (mode L, P, I;16 or I, one class index per pixel)"
                    )
                if mask_size != size:
                    raise FreqkitError(
                        f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but image {img_path} is {size[0]}x{size[1]}; "
                        "every mask must have its image's size"
                    )
                continue
            im = _open_rgb(img_path)
            raw = _open_mask(mask_path)
            self._check_size(raw, im, img_path, mask_path)
            self._labels(np.unique(raw)[None], mask_path)

    @staticmethod
    def _check_size(raw: np.ndarray, im, img_path: Path, mask_path: Path) -> None:
        if raw.shape != (im.size[1], im.size[0]):
            raise FreqkitError(
                f"mask {mask_path} is {raw.shape[1]}x{raw.shape[0]} but image {img_path} is {im.size[0]}x{im.size[1]}; "
                "every mask must have its image's size"
            )

    def _labels(self, raw: np.ndarray, path: Path) -> torch.Tensor:
        if self.label_map == "ade20k":
            lab = np.where(raw == 0, IGNORE_INDEX, raw - 1)
        else:
            lab = raw
        bad = (lab != IGNORE_INDEX) & ((lab < 0) | (lab >= self.num_classes))
        if bad.any():
            raise FreqkitError(
                f"mask {path} has class index {int(lab[bad].max())} but the dataset has {self.num_classes} classes "
                f"(0..{self.num_classes - 1}, 255 = ignore); pass the right class count (num_classes) or fix the mask"
            )
        return torch.from_numpy(lab.astype(np.int64))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        img_path, mask_path = self.pairs[index]
        im = _open_rgb(img_path)
        raw = _open_mask(mask_path)
        self._check_size(raw, im, img_path, mask_path)
        if self.transform is not None:
            x, y = _to_tensor(im), self._labels(raw, mask_path)
            if self.train:
                return self.transform(x, y, _item_generator(self.seed, self.epoch, index))
            return x, y
        s = self.size
        x = _to_tensor(im.resize((s, s), resample=2))
        # nearest resize of the raw labels (as 32-bit ints, so 255 and large ids survive)
        m = Image.fromarray(raw.astype(np.int32), mode="I").resize((s, s), resample=0)
        y = self._labels(np.array(m, dtype=np.int64), mask_path)
        if self.train and float(torch.rand((), generator=_item_generator(self.seed, self.epoch, index))) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y


def files_digest(paths: Sequence[Path], root: Optional[Path] = None) -> str:
    """SHA-256 of the ordered (path relative to ``root``, size in bytes) list: a renamed, added or changed file changes it."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        h.update(f"{p.relative_to(root) if root is not None and p.is_relative_to(root) else p}\0{size}\n".encode())
    return h.hexdigest()


def dataset_digest(ds) -> Optional[str]:
    """:func:`files_digest` of a folder dataset's files (images, and masks of pairs); None for other datasets."""
    if isinstance(ds, ImageFolderDataset):
        return files_digest([p for p, _ in ds.samples], ds.root)
    if isinstance(ds, SegmentationFolderDataset):
        return files_digest([p for pair in ds.pairs for p in pair])
    return None


def match_pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths matched by file stem; an image without a mask raises a FreqkitError."""
    for folder, what in ((images, "image"), (masks, "mask")):
        if not folder.is_dir():
            raise FreqkitError(f"{what} folder {folder} does not exist; check the data path")
    mask_by_stem = {p.stem: p for p in _list_images(masks, MASK_EXTENSIONS)}
    pairs = []
    for img in _list_images(images, IMG_EXTENSIONS):
        mask = mask_by_stem.get(img.stem)
        if mask is None:
            other = sorted(q for q in masks.iterdir() if q.stem == img.stem and q.is_file())  # only on a miss, which then raises
            if other:
                raise FreqkitError(
                    f"mask {other[0]} of image {img} is a {other[0].suffix} file; masks must be lossless label images "
                    f"({', '.join(MASK_EXTENSIONS)}): a JPEG's compression changes class indices, so save it as PNG"
                )
            raise FreqkitError(
                f"image {img} has no mask {masks}/{img.stem}.png; every image needs a mask with the same file name stem"
            )
        pairs.append((img, mask))
    return pairs


def ade20k_dataset(
    root: str | Path,
    split: str,
    size: Optional[int] = None,
    train: bool = False,
    seed: int = 0,
    crop_size: int = 512,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
) -> SegmentationFolderDataset:
    """ADE20K (SceneParsing, 150 classes) from ``root`` = ADEChallengeData2016 or its parent; label 0 -> 255, others -1.

    By default the paper protocol: training items are (3, crop_size, crop_size) from
    :class:`~freqkit.data.transforms.SegTrainTransform` (rescale to ``scale`` x ``ratio_range``, crop with
    ``cat_max_ratio``, flip, photometric distortion, pad with label 255); evaluation items keep their original
    size. With ``size`` every item is instead resized to size x size (a quick, squashed variant).
    """
    from freqkit.data.transforms import SegTrainTransform

    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    if split not in ("train", "val"):
        raise FreqkitError(f"split must be 'train' or 'val', got {split!r}")
    sub = {"train": "training", "val": "validation"}[split]
    images, masks = root / "images" / sub, root / "annotations" / sub
    if not images.is_dir() or not masks.is_dir():
        raise FreqkitError(
            f"{root} is not an ADE20K folder: expected images/{sub}/*.jpg and annotations/{sub}/*.png "
            "(the ADEChallengeData2016 layout); pass ade20k:PATH pointing at ADEChallengeData2016 or its parent"
        )
    transform = (
        None if size is not None else SegTrainTransform(int(crop_size), tuple(scale), tuple(ratio_range), float(cat_max_ratio))
    )
    return SegmentationFolderDataset(
        images,
        masks,
        num_classes=150,
        size=size if size is not None else crop_size,
        train=train,
        seed=seed,
        label_map="ade20k",
        transform=transform,
    )


def pairs_dataset(
    images: str | Path,
    masks: str | Path,
    split: str,
    num_classes: int,
    size: int = 512,
    train: bool = False,
    seed: int = 0,
    val_fraction: float = 0.1,
    transform: Optional["SegTrainTransform"] = None,
) -> SegmentationFolderDataset:
    """Generic image + mask folders; uses train/ and val/ (or training/, validation/) sub-folders when both have them,
    else holds out every k-th pair (sorted by name, k = round(1 / val_fraction)) for validation. ``transform`` (e.g.
    :class:`~freqkit.data.transforms.SegTrainTransform`): training items go through it, evaluation items keep their size."""
    images, masks = Path(images), Path(masks)
    img_dir, mask_dir = find_split_dir(images, split), find_split_dir(masks, split)
    if img_dir is not None and mask_dir is not None:
        return SegmentationFolderDataset(img_dir, mask_dir, num_classes, size=size, train=train, seed=seed, transform=transform)
    if img_dir is not None or mask_dir is not None:
        raise FreqkitError(
            f"only one of {images} and {masks} has a {split} sub-folder; give both split folders (train/, val/) or neither"
        )
    pairs = match_pairs(images, masks)
    k = max(2, round(1 / val_fraction))
    chosen = [p for i, p in enumerate(pairs) if (i % k == k - 1) == (split == "val")]
    if not chosen:
        raise FreqkitError(
            f"{images} has {len(pairs)} image/mask pairs: too few to hold out a {split} split (every {k}th pair); "
            "add images or give train/ and val/ sub-folders"
        )
    return SegmentationFolderDataset(
        images, masks, num_classes, size=size, train=train, seed=seed, files=chosen, transform=transform
    )
