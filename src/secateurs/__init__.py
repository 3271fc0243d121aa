"""secateurs: compress PyTorch models until they fit a microcontroller, and prove it."""

from __future__ import annotations

from . import bench, data, deploy, distill, graph, measure, models, prune, quant, recipe, search
from .compression import CompressResult, compress
from .train import Callback, FitState, History, LossTerm, Step, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CompressResult",
    "FitState",
    "History",
    "LossTerm",
    "Step",
    "bench",
    "compress",
    "data",
    "deploy",
    "distill",
    "evaluate",
    "fit",
    "graph",
    "measure",
    "models",
    "prune",
    "quant",
    "recipe",
    "search",
]
