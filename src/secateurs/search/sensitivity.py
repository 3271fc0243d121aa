"""The baseline every search must beat: greedy layer-wise sensitivity.

Prune each group alone to a ladder of kept fractions and measure the validation accuracy
(no fine-tuning); then, from the full model, repeatedly take the one-rung step with the
least accuracy lost per unit of overshoot removed until the budget is met (the
sensitivity analysis of Li et al. 2016, arXiv 1608.08710, turned into an allocation).

The overshoot a step removes is measured at the structure reached so far, not read from a
table of single-group cuts made on the full model: with several limits (MACs and peak
SRAM, say) the binding one changes as the model shrinks, and a step that saved much on
the full model can save nothing later.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .._progress import Steps
from ..train import evaluate
from .candidate import evaluate_candidate, get_backend, map_jobs
from .result import Search, SearchResult, search_method
from .space import Space

LEVELS = (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)


@search_method("sensitivity", takes=("importance", "backend"))
def greedy_sensitivity(
    search: Search,
    *,
    levels: Iterable[float] = LEVELS,
) -> SearchResult:
    """Prune ``model`` in place to the greedy sensitivity allocation that meets ``budget``,
    fine-tune it for ``finetune_epochs``, and return the result. Each group is cut alone
    to each of the kept fractions in ``levels`` and scored on the validation split."""
    model, task, space, x = search.model, search.task, search.space, search.space.x
    importance, seed, progress = search.importance, search.seed, search.progress
    fractions = np.array([1.0, *sorted(set(levels), reverse=True)])
    if not ((fractions > 0) & (fractions <= 1)).all():
        raise ValueError(f"levels are kept fractions in (0, 1]; got {list(levels)}")
    rungs = [space.clip(np.maximum(space.minimum, np.round(f * space.channels))) for f in fractions]
    base = evaluate(model, task, split="val")
    jobs, where = [], []
    for g in range(len(space)):
        for r in range(1, len(fractions)):
            s = space.channels.copy()
            s[g] = rungs[r][g]
            jobs.append(
                {
                    "model": model,
                    "task": task,
                    "keep": space.keep(s),
                    "example_inputs": x,
                    "importance": importance,
                    "ignored": space.ignored,
                    "seed": seed,
                }
            )
            where.append((g, r))
    drop = np.zeros((len(space), len(fractions)))
    with Steps("sensitivity: one group cut at a time", len(jobs), progress) as bar:
        accs = map_jobs(get_backend(search.backend), evaluate_candidate, jobs, bar)
    for (g, r), acc in zip(where, accs):
        drop[g, r] = max(base - acc, 0.0)
    drop = np.maximum.accumulate(drop, axis=1)  # a deeper cut never counts as cheaper

    level = np.zeros(len(space), dtype=int)
    current = space.channels.copy()
    history = []
    while not space.fits(current):
        best, best_rate = None, np.inf
        for g in range(len(space)):
            r = level[g]
            if r + 1 >= len(fractions) or rungs[r + 1][g] == current[g]:
                continue
            step = current.copy()
            step[g] = rungs[r + 1][g]
            gain = overshoot_removed(space, current, step)  # at the structure reached so far
            rate = (drop[g, r + 1] - drop[g, r] + 1e-6) / gain if gain > 0 else np.inf
            if rate < best_rate:
                best, best_rate = g, rate
        if best is None:
            current = space.shrink(current)
            break
        level[best] += 1
        current[best] = rungs[level[best]][best]
        history.append(
            {
                "group": space.names[best],
                "kept": int(current[best]),
                "excess": space.excess(current),
            }
        )
    return search.finish(current, evaluations=len(jobs), history=history)


def overshoot_removed(space: Space, before, after) -> float:
    """The part of each exceeded limit that going from ``before`` to ``after`` removes, as a
    fraction of the limit, summed over the limits."""
    cb, ca = space.costs(before), space.costs(after)
    return sum(max(0.0, cb.get(m) - max(ca.get(m), lim)) / lim for m, lim in space.limits.items())


@search_method("uniform", takes=("importance",))
def uniform(search: Search) -> SearchResult:
    """The control: the same kept fraction in every group, the largest within ``budget``,
    channels chosen by ``importance`` (L1 norm by default); prunes ``model`` in place and
    fine-tunes it."""
    return search.finish(search.space.uniform())
