"""The unified evaluation framework: grids of recipe runs, a SQLite result store, and the
report that compares every method on the same tasks, budgets and metrics.

sc.bench.run_grid("benchmarks/grids/tiny.yaml", store="runs/bench/tiny.sqlite")
sc.bench.write_bench_report("runs/bench/tiny.sqlite", "runs/bench/tiny-report")
"""

from __future__ import annotations

from .grid import CONTROL, Cell, Grid, cell_digest, cell_recipe, cells, load_grid, parse_grid
from .report import aggregate, write_bench_report
from .runner import GridRun, run_cell, run_grid, train_parent
from .store import Store

__all__ = [
    "CONTROL",
    "Cell",
    "Grid",
    "GridRun",
    "Store",
    "aggregate",
    "cell_digest",
    "cell_recipe",
    "cells",
    "load_grid",
    "parse_grid",
    "run_cell",
    "run_grid",
    "train_parent",
    "write_bench_report",
]
