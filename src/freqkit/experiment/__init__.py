"""Experiments built on training and analysis: :func:`compare` models, :func:`simulate` graph filters, open finished runs."""

from freqkit.experiment.compare import Comparison, compare, parse_seeds
from freqkit.experiment.runs import Run, evaluate_run, open_run
from freqkit.experiment.simulate import Simulation, simulate

__all__ = ["Comparison", "Run", "Simulation", "compare", "evaluate_run", "open_run", "parse_seeds", "simulate"]
