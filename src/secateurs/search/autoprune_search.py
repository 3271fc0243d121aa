"""AutoPrune: pruning by auxiliary parameters, not by the weights.

Xiao, Wang & Rajasekaran 2019, "AutoPrune: Automatic Network Pruning by Regularizing
Auxiliary Parameters" (NeurIPS). Each channel of each group gets an auxiliary parameter
m, and its gate is 1[m > 0]: the weights train as usual, while m follows its own
optimizer on the task gradient passed straight through the gate plus a budget penalty.
A channel whose m falls below zero is pruned (its gate closes), and it comes back when
the gradient through its closed gate says the loss would fall with it open. The penalty's
strength doubles while the open structure is over budget and halves while under.
"""

from __future__ import annotations

import numpy as np
import torch

from ..prune.select import lowest
from ..train import Callback, FitState, LossTerm, Step, fit, fit_progress
from .gates import GroupGates
from .result import Search, SearchResult, search_method
from .space import Space


def _gate(m: torch.Tensor) -> torch.Tensor:
    """1[m > 0] forward, identity backward (straight-through)."""
    return (m > 0).to(m.dtype) + m - m.detach()


class _Penalty(LossTerm):
    """strength * sum over channels of (the budget a channel costs) * m."""

    name = "autoprune"

    def __init__(self, aux: list[torch.Tensor], cost: np.ndarray, strength: float) -> None:
        self.aux, self.strength = aux, strength
        self.cost = [float(c) for c in cost]

    def __call__(self, step: Step) -> torch.Tensor:
        return self.strength * sum(c * m.clamp_min(0).sum() for c, m in zip(self.cost, self.aux))


class _AuxUpdate(Callback):
    """The auxiliary parameters' own optimizer step, and every ``every`` steps the budget
    feedback: the penalty grows while the open structure is over budget, shrinks while
    it is under."""

    def __init__(
        self, aux, penalty: _Penalty, space: Space, lr: float, every: int, history: list
    ) -> None:
        self.aux, self.penalty, self.space, self.history = aux, penalty, space, history
        self.optimizer = torch.optim.Adam(aux, lr=lr, betas=(0.5, 0.9))
        self.every, self.steps = every, 0

    def on_step_end(self, state: FitState) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for m in self.aux:
                m.clamp_(-0.5, 0.5)
        self.steps += 1
        if self.steps % self.every == 0:
            excess = self.space.excess(open_structure(self.aux, self.space))
            self.penalty.strength *= 1.5 if excess > 1 else 1 / 1.5

    def on_epoch_end(self, state: FitState) -> None:
        structure = open_structure(self.aux, self.space)
        self.history.append(
            {
                "epoch": state.epoch,
                "excess": self.space.excess(structure),
                "strength": self.penalty.strength,
                "open": [int(k) for k in structure],
            }
        )


def open_structure(aux: list[torch.Tensor], space: Space) -> np.ndarray:
    return space.clip([int((m > 0).sum()) for m in aux])


@search_method("autoprune")
def autoprune(
    search: Search,
    *,
    epochs: int = 6,
    aux_lr: float = 0.01,
    strength: float = 1e-2,
    every: int = 10,
    aux_init: dict[str, torch.Tensor] | None = None,
) -> SearchResult:
    """Train ``model`` with gated channels and auxiliary parameters for ``epochs``, prune
    the channels whose gates ended closed (then, while over budget, those with the lowest
    auxiliary values), fine-tune, and return the result (in place).

    Closed channels with the highest auxiliary values reopen while the budget allows.
    The auxiliary parameters learn at ``aux_lr`` (Adam) under a budget penalty that starts
    at ``strength`` and, every ``every`` steps, grows while the open structure is over
    budget and shrinks while it is under.
    ``aux_init`` sets starting auxiliary values per group name (default 0.1: all open);
    the final values are in ``result.history[-1]["aux"]``.
    """
    model, task, space = search.model, search.task, search.space
    lr, seed, progress = search.lr, search.seed, search.progress
    aux = [torch.full((g.channels,), 0.1) for g in space.groups]
    for name, values in (aux_init or {}).items():
        if name not in space.names:
            raise ValueError(f"aux_init names {name!r}, not a group; groups: {space.names}")
        aux[space.names.index(name)] = torch.as_tensor(values, dtype=torch.float32).clone()
    for m in aux:
        m.requires_grad_(True)
    # what one channel of each group costs: the budget saved by halving that group alone
    full = space.excess(space.channels)
    cost = np.empty(len(space))
    for g in range(len(space)):
        s = space.channels.copy()
        s[g] = max(space.minimum[g], s[g] // 2)
        cost[g] = max(full - space.excess(s), 0.0) / max(space.channels[g] - s[g], 1)
    cost = cost / (cost.max() + 1e-12)
    history: list[dict] = []
    penalty = _Penalty(aux, cost, strength)
    update = _AuxUpdate(aux, penalty, space, aux_lr, every, history)
    with GroupGates(space.graph, space.groups, lambda: [_gate(m) for m in aux]):
        fit(
            model,
            task,
            epochs=epochs,
            lr=lr,
            losses=[penalty],
            callbacks=[update],
            seed=seed,
            progress=fit_progress("autoprune: gated training", progress),
        )
    structure = open_structure(aux, space)
    structure = space.grow(structure) if space.fits(structure) else space.shrink(structure)
    plan = {}
    for g, k, m in zip(space.groups, structure, aux):
        if k < g.channels:
            scores = m.detach().numpy().astype(float)
            plan[g] = lowest(scores, g.channels - int(k), g.block_counts(), *g.axis_counts())
    space.graph.prune(plan)
    history.append({"aux": {n: m.detach().tolist() for n, m in zip(space.names, aux)}})
    return search.finish(structure, history=history, pruned=True)
