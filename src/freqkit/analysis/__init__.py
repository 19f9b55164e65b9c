"""Spectral diagnostics of whole models over datasets: ``analyze`` -> ``Report`` (JSON, PNG figures, HTML, text table).

``analyze`` streams a tensor, Dataset, DataLoader, iterable or image folder (``image_folder``
preprocesses with the model's timm data config), shards it over torchrun processes and can resume.
Importing this package does not import matplotlib; only ``Report.plot`` / ``Report.to_html`` do.
"""

from freqkit.analysis.analyze import analyze, model_name
from freqkit.analysis.report import HEAD_METRICS, METRICS, SCHEMA_VERSION, LayerStats, ModelReport, Report
from freqkit.analysis.stream import data_transform, image_folder, list_images

__all__ = [
    "analyze",
    "model_name",
    "Report",
    "ModelReport",
    "LayerStats",
    "METRICS",
    "HEAD_METRICS",
    "SCHEMA_VERSION",
    "image_folder",
    "data_transform",
    "list_images",
]
