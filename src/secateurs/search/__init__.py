"""Automatic pruning under device budgets: the tool finds the per-layer widths.

result = sc.search.abc(model, task, sc.search.Budget(macs=0.3))

Every search takes ``(model, task, budget)``, then keyword arguments only: its own
options, then the options all searches share (:class:`Search` describes them; one
definition, ``result.SHARED_OPTIONS``), among them ``progress`` (default True): bars over
its rounds or candidates and its training, drawn only where output reaches a person.
Every search prunes the model in place. Candidates are scored with the batch-norm
statistics re-estimated after pruning (``sc.prune.channels`` given data).
"""

from __future__ import annotations

from .abc_search import abc
from .admm_search import admm, purify
from .autoprune_search import autoprune
from .budget import Budget, BudgetError, Costs, measure_costs
from .candidate import (
    BACKENDS,
    ProcessBackend,
    RayBackend,
    SerialBackend,
    StopAfter,
    evaluate_candidate,
    get_backend,
)
from .gates import GroupGates
from .metapruning_search import PruningNet, metapruning
from .result import Search, SearchResult
from .sensitivity import greedy_sensitivity, uniform
from .space import Space

METHODS = {
    "uniform": uniform,
    "sensitivity": greedy_sensitivity,
    "admm": admm,
    "abc": abc,
    "autoprune": autoprune,
    "metapruning": metapruning,
}

__all__ = [
    "BACKENDS",
    "METHODS",
    "Budget",
    "BudgetError",
    "Costs",
    "GroupGates",
    "ProcessBackend",
    "PruningNet",
    "RayBackend",
    "Search",
    "SearchResult",
    "SerialBackend",
    "Space",
    "StopAfter",
    "abc",
    "admm",
    "autoprune",
    "evaluate_candidate",
    "get_backend",
    "greedy_sensitivity",
    "measure_costs",
    "metapruning",
    "purify",
    "uniform",
]
