"""MetaPruning: a PruningNet generates the weights of any width vector.

Liu et al. 2019, "MetaPruning: Meta Learning for Automatic Neural Network Channel
Pruning" (ICCV, arXiv 1903.10258). For every convolution and linear layer a small
network maps the kept fractions of the layer's input and output channel groups to all of
its weights; a width vector keeps each group's first channels. The PruningNet trains by
sampling a random width vector at every step; an evolutionary search then scores width
vectors under the budget by the validation accuracy of their generated weights (after
recalibrating BatchNorm statistics, with no fine-tuning); the winner is built from its
generated weights and fine-tuned. Here each generator starts out producing the trained
model's weights, so the search starts from what the model already knows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .._checks import check_int
from .._progress import Steps
from ..data.task import Task, call, map_inputs
from ..train import evaluate, fit, fit_progress
from .budget import BudgetError
from .gates import GroupGates
from .result import Search, SearchResult, search_method
from .space import Space

LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


class PruningNet(nn.Module):
    """Generates every convolution and linear weight of ``model`` from a width vector
    (kept fraction per group of ``space``); runs ``model`` at that width through gates."""

    def __init__(self, model: nn.Module, space: Space, hidden: int = 32) -> None:
        super().__init__()
        self.model, self.space = model, space
        self.searchable = np.array([not g.constraints for g in space.groups])
        where: dict[str, list[int | None]] = {}
        for gi, g in enumerate(space.groups):
            for m in g.members:
                if isinstance(space.graph.module(m.module), LAYERS):
                    slot = where.setdefault(m.module, [None, None])
                    slot[0 if m.axis == "in" else 1] = gi
                    if m.axis not in ("in", "out"):
                        slot[0] = gi
        self.layers = {
            n: where.get(n, [None, None])
            for n, mod in model.named_modules()
            if isinstance(mod, LAYERS)
        }
        self.generators = nn.ModuleDict()
        for name in self.layers:
            layer = model.get_submodule(name)
            assert isinstance(layer, LAYERS)
            w = layer.weight.detach()
            head = nn.Linear(hidden, w.numel())
            nn.init.zeros_(head.weight)
            with torch.no_grad():
                head.bias.copy_(w.flatten())
            self.generators[name.replace(".", "/")] = nn.Sequential(
                nn.Linear(2, hidden), nn.ReLU(), head
            )
        self.structure = space.channels.copy()
        self._gates = GroupGates(space.graph, space.groups, self.gates)

    def gates(self) -> list[torch.Tensor]:
        return [(torch.arange(c) < k).float() for c, k in zip(self.space.channels, self.structure)]

    def weights(self, structure) -> dict[str, torch.Tensor]:
        frac = torch.as_tensor(self.space.fractions(structure), dtype=torch.float32)
        out = {}
        for name, (gin, gout) in self.layers.items():
            code = torch.stack(
                [
                    frac[gin] if gin is not None else torch.tensor(1.0),
                    frac[gout] if gout is not None else torch.tensor(1.0),
                ]
            )
            w = self.generators[name.replace(".", "/")](code)
            out[f"{name}.weight"] = w.view_as(self.model.get_submodule(name).weight)
        return out

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        with self._gates:
            return functional_call(self.model, self.weights(self.structure), x)


class _Sample(nn.Module):
    """Training wrapper: a new random width vector at every training forward pass, each
    group's kept fraction drawn around ``center`` (half to one and a half times it), the
    region where the budget lets the search look."""

    def __init__(self, net: PruningNet, center: np.ndarray, seed: int) -> None:
        super().__init__()
        self.net, self.center = net, center
        self.rng = np.random.default_rng(seed)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        if self.training:
            space = self.net.space
            f = self.center * self.rng.uniform(0.5, 1.5, size=len(space))
            s = space.clip(np.ceil(np.minimum(f, 1.0) * space.channels))
            self.net.structure = np.where(self.net.searchable, s, space.channels)
        return self.net(*x)


def _recalibrate(net: PruningNet, task: Task, batches: int = 4, batch_size: int = 128) -> None:
    """BatchNorm statistics for the current width: a cumulative average over a few
    training batches (each width has its own statistics, as MetaPruning does)."""
    norms = [m for m in net.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    x = task.inputs("train")
    net.train()
    with torch.no_grad():
        for i in range(batches):
            call(net, map_inputs(lambda t, i=i: t[i * batch_size : (i + 1) * batch_size], x))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    net.eval()


@search_method("metapruning")
def metapruning(
    search: Search,
    *,
    epochs: int = 6,
    meta_lr: float = 1e-3,
    population: int = 12,
    generations: int = 5,
    parents: int = 4,
    mutation: float = 0.2,
    hidden: int = 32,
) -> SearchResult:
    """Train a PruningNet over random widths for ``epochs`` (at ``meta_lr``; widths are
    drawn around the budget's uniform width), search width vectors within
    ``budget`` by evolution (``population`` per generation, the best ``parents`` bred by
    crossover and mutation), then prune ``model`` in place to the winner, starting from
    its generated weights, and fine-tune it. The evolution runs ``generations`` rounds; a
    child's widths are redrawn with probability ``mutation`` each; the PruningNet's hidden
    layer has ``hidden`` units (Liu et al. 2019, arXiv 1903.10258)."""
    population = check_int("population", population, minimum=2)
    parents = check_int("parents", parents, minimum=1)
    model, task, space = search.model, search.task, search.space
    seed, progress = search.seed, search.progress
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PruningNet(model, space, hidden)
    center = space.fractions(space.uniform())
    fit(
        _Sample(net, center, seed),
        task,
        epochs=epochs,
        lr=meta_lr,
        seed=seed,
        progress=fit_progress("metapruning: PruningNet training", progress),
    )
    rng = np.random.default_rng(seed + 1)
    scores: dict[tuple[int, ...], float] = {}

    fixed = ~net.searchable  # groups under grouped-convolution constraints stay whole

    def legal(s) -> np.ndarray:
        s = np.where(net.searchable, space.clip(s), space.channels)
        s = space.shrink(s, frozen=fixed)
        if not space.fits(s):
            raise BudgetError(
                "the budget cannot be met with the groups MetaPruning cannot narrow "
                f"(grouped convolutions: {[n for n, f in zip(space.names, fixed) if f]}) kept "
                "whole; use another search method"
            )
        return s

    def score(s: np.ndarray) -> float:
        key = tuple(int(v) for v in s)
        if key not in scores:
            net.structure = np.asarray(key)
            _recalibrate(net, task)
            scores[key] = evaluate(net, task, split="val")
        return scores[key]

    pool = [legal(space.channels)] + [legal(space.random(rng)) for _ in range(population - 1)]
    history = []
    with Steps("metapruning: evolution", generations + 1, progress) as bar:
        for generation in range(generations + 1):
            ranked = sorted(pool, key=score, reverse=True)
            history.append({"generation": generation, "best": score(ranked[0])})
            bar.advance(status=f"best val acc {history[-1]['best']:.3f}")
            if generation == generations:
                break
            elite = ranked[:parents]
            children: list[np.ndarray] = []
            while len(children) < population - parents:
                a, b = rng.choice(len(elite), size=2)
                child = np.where(rng.random(len(space)) < 0.5, elite[a], elite[b])
                flip = rng.random(len(space)) < mutation
                child = np.where(flip, space.random(rng), child)
                children.append(legal(child))
            pool = elite + children
    best = max(pool, key=score)
    net.structure = best
    _recalibrate(net, task)
    with torch.no_grad():
        for name, w in net.weights(best).items():
            layer = model.get_submodule(name[: -len(".weight")])
            assert isinstance(layer, LAYERS)
            layer.weight.copy_(w)
    space.graph.prune(space.plan(best))
    return search.finish(best, evaluations=len(scores), history=history, pruned=True)
