"""What every search shares: its options, how it starts and ends, and what it returns.

A search opens a :class:`Search` with :func:`begin` (the options every search takes,
checked once; ``Search.space``, the kept channels under the budget, is built when first
asked) and closes it with :meth:`Search.finish` (prune to the structure found, fine-tune,
measure, check the budget).
"""

from __future__ import annotations

import copy
import functools
import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .._checks import check_float, check_int, in_place
from ..data.forms import as_task
from ..data.task import Task
from ..prune.importance import IMPORTANCE
from ..train import evaluate, fit, fit_progress
from .budget import Budget, Costs, measure_costs
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
        costs = {m: self.costs.get(m) for m in self.limits}
        return all(c is not None and c <= self.limits[m] for m, c in costs.items())


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


# The options every search takes after its own: name, default, annotation. A search that
# has no use for one of OPTIONAL leaves it out (uniform evaluates no candidates, so it has
# no backend); @search_method adds them to each search's signature, in this order.
SHARED_OPTIONS = (
    ("finetune_epochs", 5, "int"),
    ("lr", 1e-3, "float"),
    ("importance", "l1", "str"),
    ("min_keep", 0.1, "float"),
    ("ignored", (), "Iterable[str]"),
    ("seed", 0, "int"),
    ("backend", None, "Backend | None"),
    ("progress", True, "bool"),
)
OPTIONAL = ("importance", "backend")
SHARED_DOC = """
    ``model`` is pruned in place, on ``task``'s data, until it meets ``budget``
    (:class:`Budget`). The options every search shares, after its own
    (``sc.search.Search`` describes them):
    ``finetune_epochs`` (5), ``lr`` (1e-3), {optional}``min_keep`` (0.1), ``ignored``,
    ``seed`` (0), {backend}``progress``.
    """


@dataclass
class Search:
    """One search under way, with the options every search takes.

    - ``finetune_epochs`` (int >= 0) and ``lr``: the fine-tuning each search ends with (none
      for 0 epochs), at learning rate ``lr`` (also the method's own training rate where
      it has no other);
    - ``importance``: the criterion that picks which channels go once a search has chosen
      how many (``sc.prune.list_importance()``), for uniform, sensitivity and ABC (ADMM,
      AutoPrune and MetaPruning learn which channels matter);
    - ``min_keep`` (in (0, 1]): the fraction of each group's channels always kept;
    - ``ignored``: module paths the search leaves as they are;
    - ``seed``: every random choice (initial sources, sampled widths, batch order);
    - ``backend``: where candidates are evaluated (``sc.search.get_backend``), for the
      searches that evaluate many (sensitivity, ABC);
    - ``progress``: progress bars while it runs.
    """

    method: str
    model: nn.Module
    task: Task
    budget: Budget
    finetune_epochs: int
    lr: float
    importance: str
    min_keep: float
    ignored: Iterable[str]
    seed: int
    backend: object
    progress: bool
    start: float = field(default_factory=time.perf_counter)
    channels: Space | None = field(default=None, init=False, repr=False)

    @property
    def space(self) -> Space:
        """The space of kept channels under the budget, built (and the budget checked
        reachable) when a channel search first asks, before any training; a search of
        unstructured sparsity never does."""
        if self.channels is None:
            self.channels = Space(
                self.model, self.task.example_inputs(), self.budget, self.ignored, self.min_keep
            )
            self.channels.check_reachable()
        return self.channels

    def finish(
        self, structure, *, evaluations: int = 0, history=(), pruned: bool = False
    ) -> SearchResult:
        """Prune the model to ``structure`` in place (unless ``pruned``), fine-tune it,
        measure it, and fail loudly if the result breaks the budget (a bug, never a
        result)."""
        model, task, space = self.model, self.task, self.space
        if not pruned:
            structure = fitting(space, model, structure, self.importance, task, self.seed)
            space.apply(model, structure, importance=self.importance, data=task, seed=self.seed)
        self.finetune()
        model.eval()
        costs = measure_costs(model, space.x, space.budget)
        return self.result(
            space.keep(np.asarray(structure)),
            costs,
            space.limits,
            evaluations=evaluations,
            history=history,
        )

    def finetune(self) -> None:
        """The fine-tuning every search ends with (none for 0 epochs), its bar named after
        the search."""
        if self.finetune_epochs:
            fit(
                self.model,
                self.task,
                epochs=self.finetune_epochs,
                lr=self.lr,
                seed=self.seed,
                progress=fit_progress(f"{self.method}: fine-tuning", self.progress),
            )

    def result(self, structure, costs: Costs, limits, *, evaluations=0, history=()) -> SearchResult:
        """The result of the finished search, after checking ``costs`` against ``limits``."""
        if not self.budget.fits(costs, limits):
            raise RuntimeError(f"{self.method} produced a model over budget: {costs} vs {limits}")
        return SearchResult(
            self.method,
            structure,
            costs,
            limits,
            evaluate(self.model, self.task),
            evaluations,
            time.perf_counter() - self.start,
            list(history),
        )


def begin(method: str, model: nn.Module, task, budget: Budget, **options) -> Search:
    """Start the search ``method``: check the shared options before any work."""
    start = time.perf_counter()
    task = as_task(task)
    options = {name: default for name, default, _ in SHARED_OPTIONS} | options
    search = Search(method, model, task, budget, **options, start=start)
    search.finetune_epochs = check_int("finetune_epochs", search.finetune_epochs, minimum=0)
    search.lr = check_float("lr", search.lr, minimum=0.0, strict_minimum=True)
    search.seed = check_int("seed", search.seed)
    IMPORTANCE.get(search.importance)  # an unknown criterion lists the known ones
    return search


def search_method(name: str, *, takes: tuple[str, ...] = ()):
    """Make ``fn(search, *, own options)`` the public search ``name(model, task, budget, *,
    own options, shared options)``: the shared options (those of ``OPTIONAL`` only if in
    ``takes``) are added to its signature and docstring, checked, and handed to ``fn``
    as the :class:`Search` it runs in (``search.model``, ``search.lr``, ...)."""
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
        for n, d, a in SHARED_OPTIONS
        if n not in OPTIONAL or n in takes
    ]

    def wrap(fn: Callable[..., SearchResult]) -> Callable[..., SearchResult]:
        own = list(inspect.signature(fn).parameters.values())[1:]
        names = {p.name for p in own} | {p.name for p in shared}

        @functools.wraps(fn)
        def public(model: nn.Module, task, budget: Budget, **options) -> SearchResult:
            unknown = sorted(set(options) - names)
            if unknown:
                raise TypeError(
                    f"{name}() takes no option {unknown[0]!r}; its options: "
                    f"{', '.join(p.name for p in own + shared)}"
                )
            mine = {p.name: options.pop(p.name) for p in own if p.name in options}
            return fn(begin(name, model, task, budget, **options), **mine)

        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        public.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("model", positional, annotation="nn.Module"),
                inspect.Parameter("task", positional, annotation="Task"),
                inspect.Parameter("budget", positional, annotation="Budget"),
                *own,
                *shared,
            ],
            return_annotation="SearchResult",
        )
        public.__doc__ = (
            (fn.__doc__ or "").rstrip()
            + "\n"
            + SHARED_DOC.format(
                optional="``importance`` (l1), " if "importance" in takes else "",
                backend="``backend``, " if "backend" in takes else "",
            )
        )
        return in_place(public)

    return wrap
