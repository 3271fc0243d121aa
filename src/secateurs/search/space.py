"""The space a channel search moves in: kept-channel counts per group, and their costs.

A structure is an integer vector, one kept count per prunable group of the model's
dependency graph (in the graph's order); ``Space.keep(structure)`` names it for
``sc.prune.channels(..., keep=...)``. Costs are measured, not modelled: each new structure
is applied to a copy of the model and profiled with ``sc.measure`` (and cached).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
from torch import nn

from ..graph import DependencyGraph, replay
from ..prune.select import lowest
from ..prune.structured import PruneReport, channels, group_name
from .budget import Budget, Costs, measure_costs


class Space:
    """Kept-channel counts per group of ``model``, each between ``minimum`` (a
    ``min_keep`` fraction of the group, at least one channel) and all of them."""

    def __init__(
        self,
        model: nn.Module,
        example_inputs,
        budget: Budget,
        ignored: Iterable[str] = (),
        min_keep: float = 0.1,
    ) -> None:
        if not isinstance(budget, Budget):
            raise TypeError(f"budget must be a sc.search.Budget, got {type(budget).__name__}")
        if not 0 < min_keep <= 1:
            raise ValueError(
                f"min_keep is the fraction of a group always kept, in (0, 1]; got {min_keep}"
            )
        self.model, self.x, self.budget = model, example_inputs, budget
        self.ignored = tuple(ignored)
        self.graph = DependencyGraph(model, example_inputs, ignored=self.ignored)
        self.groups = self.graph.groups()
        if not self.groups:
            raise ValueError("the model has no prunable channel group")
        self.names = [group_name(g) for g in self.groups]
        self.channels = np.array([g.channels for g in self.groups], dtype=np.int64)
        self.minimum = np.maximum(1, np.ceil(self.channels * min_keep)).astype(np.int64)
        self.reference = measure_costs(model, example_inputs, budget)
        self.limits = budget.limits(self.reference)
        self._costs: dict[tuple[int, ...], Costs] = {tuple(self.channels): self.reference}

    def __len__(self) -> int:
        return len(self.groups)

    def clip(self, structure) -> np.ndarray:
        s = np.rint(np.asarray(structure, dtype=float)).astype(np.int64)
        return np.clip(s, self.minimum, self.channels)

    def keep(self, structure) -> dict[str, int]:
        """``{group name: kept channels}`` for ``sc.prune.channels(keep=...)``."""
        return {n: int(k) for n, k in zip(self.names, self.clip(structure))}

    def apply(
        self, model: nn.Module, structure, importance: str = "l1", data=None, seed: int = 0
    ) -> PruneReport:
        """Prune ``model`` (this space's model or a copy of it) to ``structure``, in place,
        removing each group's least important channels by ``importance``."""
        return channels(
            model,
            self.x,
            keep=self.keep(structure),
            importance=importance,
            ignored=self.ignored,
            data=data,
            seed=seed,
        )

    def plan(self, structure) -> dict:
        """``{group: channels removed}`` keeping each group's first channels: costs do not
        depend on which channels go, only on how many."""
        plan = {}
        for g, k in zip(self.groups, self.clip(structure)):
            if k < g.channels:
                order = -np.arange(g.channels, dtype=float)
                plan[g] = lowest(order, g.channels - int(k), g.block_counts(), *g.axis_counts())
        return plan

    def costs(self, structure) -> Costs:
        """The measured costs of the model pruned to ``structure`` (cached)."""
        key = tuple(int(k) for k in self.clip(structure))
        if key not in self._costs:
            pruned = copy.deepcopy(self.model)
            replay(pruned, self.graph.keep_indices(self.plan(key)))
            self._costs[key] = measure_costs(pruned, self.x, self.budget)
        return self._costs[key]

    def excess(self, structure) -> float:
        return self.budget.excess(self.costs(structure), self.limits)

    def fits(self, structure) -> bool:
        return self.excess(structure) <= 1.0

    def check_reachable(self) -> None:
        """Fail at once when even the smallest structure is over budget."""
        self.budget.check_reachable(self.costs(self.minimum), self.limits, "channel pruning")

    def scaled(self, structure, s: float, frozen=None) -> np.ndarray:
        """``structure`` moved a fraction ``s`` of the way from the minimum (0) to it (1);
        groups marked in ``frozen`` keep their value."""
        structure = np.asarray(structure, float)
        base = np.floor(self.minimum + float(s) * (structure - self.minimum) + 1e-9)
        if frozen is not None:
            base = np.where(frozen, structure, base)
        return self.clip(base)

    def shrink(self, structure, steps: int = 12, frozen=None) -> np.ndarray:
        """The largest scaling of ``structure`` toward the minimum that meets the budget
        (``frozen`` groups unchanged); the minimum itself when nothing larger fits."""
        structure = self.clip(structure)
        s = bisect_fraction(lambda s: self.fits(self.scaled(structure, s, frozen)), steps)
        return self.scaled(structure, s, frozen)

    def grow(self, structure, steps: int = 12) -> np.ndarray:
        """``structure`` moved as far toward the full model as the budget allows."""
        structure = self.clip(structure)
        if not self.fits(structure):
            return structure

        def between(s: float) -> np.ndarray:
            return self.clip(np.floor(structure + s * (self.channels - structure) + 1e-9))

        return between(bisect_fraction(lambda s: self.fits(between(s)), steps))

    def uniform(self) -> np.ndarray:
        """The same kept fraction in every group, the largest that meets the budget."""
        return self.shrink(self.channels)

    def random(self, rng: np.random.Generator) -> np.ndarray:
        """Kept counts drawn uniformly per group."""
        return self.clip(rng.integers(self.minimum, self.channels + 1))

    def fractions(self, structure) -> np.ndarray:
        return self.clip(structure) / self.channels


def bisect_fraction(fits, steps: int = 14) -> float:
    """The largest f in [0, 1] with ``fits(f)``, assuming fits is monotone and fits(0)."""
    lo, hi = 0.0, 1.0
    if fits(1.0):
        return 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
