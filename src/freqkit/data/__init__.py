"""Datasets: built-in synthetic sets (``shapes``, ``textures``), image folders, ADE20K, image + mask pairs.

``build_datasets("shapes")`` parses a data spec (see :mod:`freqkit.data.spec`) and returns
the train / val splits and a :class:`DataInfo`. Images are (3, H, W) float in [0, 1]; segmentation
masks are (H, W) int64 with 255 = ignore.
"""

from freqkit.data.builtin import builtin_images
from freqkit.data.folders import ImageFolderDataset, SegmentationFolderDataset, ade20k_dataset, pairs_dataset
from freqkit.data.spec import DATA_HELP, DataInfo, DataSpec, build_datasets, parse_data_spec
from freqkit.data.synthetic import SHAPES_CLASSES, ShapesDataset, TexturesDataset, shapes_sample, textures_sample

__all__ = [
    "DATA_HELP",
    "DataInfo",
    "DataSpec",
    "ImageFolderDataset",
    "SHAPES_CLASSES",
    "SegmentationFolderDataset",
    "ShapesDataset",
    "TexturesDataset",
    "ade20k_dataset",
    "build_datasets",
    "builtin_images",
    "pairs_dataset",
    "parse_data_spec",
    "shapes_sample",
    "textures_sample",
]
