"""What every search returns, and the step every channel search ends with."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from ..data.task import Task
from ..train import evaluate, fit, fit_progress
from .budget import Costs, measure_costs
from .space import Space


@dataclass
class SearchResult:
    """The pruned model's structure (kept channels per group; None for unstructured
    sparsity), its measured costs against the budget's limits, its test accuracy after
    fine-tuning, the search's history, and how many candidates it evaluated."""

    method: str
    structure: dict[str, int] | None
    costs: Costs
    limits: dict[str, float]
    accuracy: float
    evaluations: int = 0
    wall_s: float = 0.0
    history: list[dict] = field(default_factory=list, repr=False)

    @property
    def fits(self) -> bool:
        return all(self.costs.get(m) <= v for m, v in self.limits.items())


def finetune(
    model: nn.Module, task: Task, method: str, epochs: int, lr: float, seed: int, progress: bool
) -> None:
    """The fine-tuning every search ends with (none for 0 epochs), its bar named after it."""
    if epochs:
        fit(
            model,
            task,
            epochs=epochs,
            lr=lr,
            seed=seed,
            progress=fit_progress(f"{method}: fine-tuning", progress),
        )


REPAIR_STEPS = 20


def fitting(space: Space, model: nn.Module, structure, importance: str, data, seed: int):
    """``structure``, or the nearest smaller one (moved toward the minimum in steps of
    1/``REPAIR_STEPS``) that fits once its channels are chosen by ``importance``. The
    search counts each structure on a group's first channels; where the C's bytes depend
    on which channels stay (``measure="c"``: sparse encodings count nonzero weights, and
    folded channels count less), the chosen ones can cost a few bytes more."""
    if space.budget.measure != "c":
        return structure
    trial_structure = np.asarray(structure)
    for step in range(1, REPAIR_STEPS + 1):
        trial = copy.deepcopy(model)
        space.apply(trial, trial_structure, importance=importance, data=data, seed=seed)
        if space.budget.fits(measure_costs(trial, space.x, space.budget), space.limits):
            break
        trial_structure = space.scaled(structure, 1 - step / REPAIR_STEPS)
    return trial_structure


def finish(
    method: str,
    space: Space,
    model: nn.Module,
    structure,
    task: Task,
    finetune_epochs: int,
    lr: float,
    seed: int,
    start: float,
    evaluations: int,
    history: list[dict],
    importance: str = "l1",
    pruned: bool = False,
    progress: bool = False,
) -> SearchResult:
    """Prune ``model`` to ``structure`` in place (unless ``pruned``), fine-tune it, measure
    it, and fail loudly if the result breaks the budget (a bug, never a result)."""
    if not pruned:
        structure = fitting(space, model, structure, importance, task, seed)
        space.apply(model, structure, importance=importance, data=task, seed=seed)
    finetune(model, task, method, finetune_epochs, lr, seed, progress)
    model.eval()
    costs = measure_costs(model, space.x, space.budget)
    if not space.budget.fits(costs, space.limits):
        raise RuntimeError(f"{method} produced a model over budget: {costs} vs {space.limits}")
    return SearchResult(
        method,
        space.keep(np.asarray(structure)),
        costs,
        space.limits,
        evaluate(model, task),
        evaluations,
        time.perf_counter() - start,
        history,
    )
