"""ABCPruner: artificial bee colony search over kept channels per layer.

Lin et al. 2020, "Channel Pruning via Automatic Structure Search" (IJCAI, arXiv
2001.08565). Food sources are structures (kept channels per group); a source's fitness is
the validation accuracy after a short fine-tune of the weights it inherits from the
trained model. Employed bees move each source toward or away from another, onlookers do
the same for sources picked in proportion to fitness, and scouts replace sources that
stopped improving. Every candidate is shrunk into the budget before it is evaluated.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int
from .._progress import Steps
from .candidate import evaluate_candidate, get_backend, map_jobs
from .result import Search, SearchResult, search_method


@search_method("abc", takes=("importance", "backend"))
def abc(
    search: Search,
    *,
    colony: int = 6,
    cycles: int = 4,
    limit: int = 3,
    dims: int = 2,
    steps: int = 30,
) -> SearchResult:
    """Search kept channels per group with an artificial bee colony under ``budget``;
    prune ``model`` in place to the best source, fine-tune it, return the result.

    ``colony`` food sources, ``cycles`` rounds of employed and onlooker bees, a scout after
    ``limit`` trials without improvement; each move changes ``dims`` groups; fitness is
    validation accuracy after ``steps`` fine-tuning steps.
    """
    colony = check_int("colony", colony, minimum=2)
    cycles = check_int("cycles", cycles, minimum=0)
    limit = check_int("limit", limit, minimum=1)
    model, task, space, x = search.model, search.task, search.space, search.space.x
    lr, importance, seed, progress = search.lr, search.importance, search.seed, search.progress
    rng = np.random.default_rng(seed)
    run = get_backend(search.backend)
    evaluated: dict[tuple[int, ...], float] = {}

    def fitness(structures: list[np.ndarray]) -> list[float]:
        todo = list({tuple(s.tolist()) for s in structures} - set(evaluated))
        jobs = [
            {
                "model": model,
                "task": task,
                "keep": space.keep(s),
                "example_inputs": x,
                "steps": steps,
                "lr": lr,
                "importance": importance,
                "ignored": space.ignored,
                "seed": seed,
            }
            for s in todo
        ]
        for s, acc in zip(todo, map_jobs(run, evaluate_candidate, jobs)):
            evaluated[s] = acc
        return [evaluated[tuple(s.tolist())] for s in structures]

    def neighbour(i: int, sources: list[np.ndarray]) -> np.ndarray:
        k = rng.choice([j for j in range(len(sources)) if j != i])
        v = sources[i].astype(float)
        for d in rng.choice(len(space), size=min(dims, len(space)), replace=False):
            phi = rng.uniform(-1, 1)
            step = phi * (v[d] - sources[k][d])
            if abs(step) < 1:  # equal coordinates: still move one channel
                step = rng.choice([-1, 1]) * max(1, round(0.1 * space.channels[d]))
            v[d] += step
        return space.shrink(space.clip(v))

    with Steps("abc: bee colony cycles", cycles + 1, progress) as bar:
        sources = [space.uniform()] + [space.shrink(space.random(rng)) for _ in range(colony - 1)]
        fit = fitness(sources)
        bar.advance(status=f"best val acc {max(fit):.3f}")
        trials = [0] * colony
        history = [{"cycle": 0, "best": max(fit)}]

        def try_move(i: int) -> None:
            v = neighbour(i, sources)
            (fv,) = fitness([v])
            if fv > fit[i]:
                sources[i], fit[i], trials[i] = v, fv, 0
            else:
                trials[i] += 1

        for cycle in range(1, cycles + 1):
            for i in range(colony):  # employed bees
                try_move(i)
            weights = np.asarray(fit) + 1e-6
            for i in rng.choice(colony, size=colony, p=weights / weights.sum()):  # onlookers
                try_move(int(i))
            leader = int(np.argmax(fit))
            for i in range(colony):  # scouts
                if trials[i] > limit and i != leader:
                    sources[i] = space.shrink(space.random(rng))
                    fit[i], trials[i] = fitness([sources[i]])[0], 0
            history.append({"cycle": cycle, "best": max(fit), "mean": float(np.mean(fit))})
            bar.advance(status=f"best val acc {max(fit):.3f}")
    best = sources[int(np.argmax(fit))]
    return search.finish(best, evaluations=len(evaluated), history=history)
