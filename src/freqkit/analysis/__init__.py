"""Spectral diagnostics of whole models: ``analyze`` -> ``Report`` (JSON, PNG figures, HTML, text table).

Importing this package does not import matplotlib; only ``Report.plot`` / ``Report.to_html`` do.
"""
from freqkit.analysis.analyze import analyze, model_name
from freqkit.analysis.report import METRICS, SCHEMA_VERSION, LayerStats, ModelReport, Report

__all__ = ["analyze", "model_name", "Report", "ModelReport", "LayerStats", "METRICS", "SCHEMA_VERSION"]
