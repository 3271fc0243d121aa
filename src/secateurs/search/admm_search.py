"""ADMM pruning with purification.

Zhang et al. 2018, "A Systematic DNN Weight Pruning Framework using Alternating Direction
Method of Multipliers" (ECCV, arXiv 1804.03294); Liu et al. 2020, "AutoCompress" (AAAI,
arXiv 1907.03141); purification after Ma et al. 2019 (arXiv 1905.00136).

minimize loss(W) subject to W = Z, Z in the constraint set: SGD on
loss(W) + rho/2 ||W - Z + U||^2, then after every epoch Z = projection of W + U onto the
set, U = U + W - Z, rho grows. Structured: every group keeps its budgeted number of
channels (the largest L2 norms of W + U across all the group's layers); unstructured:
the largest |W + U| of each layer, the same fraction everywhere, as many as the budget
allows. Then the hard prune,
purification (drop kept channels whose removal changes the validation loss by less than
epsilon; re-activate pruned ones whose return lowers it most, while the budget allows),
and fine-tuning.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..data.task import Task, call
from ..graph import DependencyGraph
from ..prune.importance import IMPORTANCE
from ..prune.select import lowest
from ..prune.unstructured import WeightMask
from ..train import Callback, FitState, LossTerm, Step, fit, fit_progress
from .budget import measure_costs
from .gates import GroupGates
from .result import Search, SearchResult, search_method
from .space import Space, bisect_fraction


class _Augmented(LossTerm):
    """rho/2 * sum ||W - Z + U||^2 over the constrained parameters."""

    name = "admm"

    def __init__(self, params: dict[str, nn.Parameter], rho: float) -> None:
        self.params, self.rho = params, rho
        self.z = {n: p.detach().clone() for n, p in params.items()}
        self.u = {n: torch.zeros_like(p) for n, p in params.items()}

    def __call__(self, step: Step) -> torch.Tensor:
        return (
            self.rho
            / 2
            * sum(((p - self.z[n] + self.u[n]) ** 2).sum() for n, p in self.params.items())
        )

    def residual(self) -> float:
        """||W - Z|| over ||W||: how far the weights are from the constraint set."""
        num = sum(float(((p.detach() - self.z[n]) ** 2).sum()) for n, p in self.params.items())
        den = sum(float((p.detach() ** 2).sum()) for p in self.params.values())
        return (num / max(den, 1e-12)) ** 0.5


class _Dual(Callback):
    def __init__(self, term: _Augmented, project, growth: float, history: list) -> None:
        self.term, self.project, self.growth, self.history = term, project, growth, history

    def on_epoch_end(self, state: FitState) -> None:
        t = self.term
        w_plus_u = {n: p.detach() + t.u[n] for n, p in t.params.items()}
        t.z = self.project(w_plus_u)
        for n, p in t.params.items():
            t.u[n] = t.u[n] + p.detach() - t.z[n]
        self.history.append({"epoch": state.epoch, "rho": t.rho, "residual": t.residual()})
        t.rho *= self.growth


class _StructuredProjection:
    """Keep each group's top channels by the L2 norm of W + U, zero the rest everywhere
    they appear (filters, BatchNorm entries, next-layer inputs)."""

    def __init__(self, model: nn.Module, space: Space, structure: np.ndarray) -> None:
        self.scratch = copy.deepcopy(model)
        self.graph = DependencyGraph(self.scratch, space.x, ignored=space.ignored)
        self.structure = structure
        self.plan: dict = {}

    def __call__(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        params = dict(self.scratch.named_parameters())
        with torch.no_grad():
            for n, v in values.items():
                params[n].copy_(v)
        criterion = IMPORTANCE.get("l2")
        plan = {}
        for g, k in zip(self.graph.groups(), self.structure):
            if k < g.channels:
                scores = np.asarray(criterion(self.graph, g), float)
                plan[g] = lowest(scores, g.channels - int(k), g.block_counts(), *g.axis_counts())
        with torch.no_grad():
            self.graph.zero(plan)
        self.plan = {i: plan[g] for i, g in enumerate(self.graph.groups()) if g in plan}
        return {n: params[n].detach().clone() for n in values}


def _loss(model: nn.Module, x, y: torch.Tensor, task: Task) -> float:
    with torch.no_grad():
        return float((task.loss or nn.functional.cross_entropy)(call(model, x), y))


def purify(
    model: nn.Module,
    space: Space,
    open_: list[torch.Tensor],
    task: Task,
    epsilon: float,
    *,
    candidates: int = 16,
) -> tuple[list[torch.Tensor], dict]:
    """Remove kept channels of ``model`` (gated in ``space``) whose removal changes the
    validation loss on ``task`` by less than ``epsilon``, then re-activate the pruned
    channels that help most, while the budget allows (the weakest ``candidates`` kept and
    strongest pruned channels are tried); ``open_`` holds a 0/1 gate per channel."""
    x, y = task.inputs("val"), task.val.tensors[-1]
    gates = [g.clone() for g in open_]
    was_training = model.training
    model.eval()
    removed = restored = 0
    with GroupGates(space.graph, space.groups, lambda: gates):
        base = _loss(model, x, y, task)
        norms = [np.asarray(IMPORTANCE.get("l2")(space.graph, g), float) for g in space.groups]
        kept = [
            (norms[gi][c], gi, c)
            for gi, g in enumerate(gates)
            for c in range(len(g))
            if g[c] > 0 and int(g.sum()) > space.minimum[gi]
        ]
        for _, gi, c in sorted(kept)[:candidates]:  # the weakest kept channels first
            if int(gates[gi].sum()) <= space.minimum[gi]:
                continue
            gates[gi][c] = 0.0
            loss = _loss(model, x, y, task)
            if loss - base < epsilon:
                base, removed = loss, removed + 1
            else:
                gates[gi][c] = 1.0
        pruned = [
            (-norms[gi][c], gi, c) for gi, g in enumerate(gates) for c in range(len(g)) if g[c] == 0
        ]
        for _, gi, c in sorted(pruned)[:candidates]:  # the strongest pruned channels first
            counts = np.array([int(g.sum()) for g in gates])
            counts[gi] += 1
            if not space.fits(counts):
                continue
            gates[gi][c] = 1.0
            loss = _loss(model, x, y, task)
            if base - loss > epsilon:
                base, restored = loss, restored + 1
            else:
                gates[gi][c] = 0.0
    model.train(was_training)
    return gates, {"purified_removed": removed, "purified_restored": restored}


@search_method("admm")
def admm(
    search: Search,
    *,
    structured: bool = True,
    structure=None,
    epochs: int = 6,
    admm_lr: float = 0.01,
    rho: float = 1.0,
    rho_growth: float = 1.5,
    purification: bool = True,
    epsilon: float = 1e-3,
) -> SearchResult:
    """ADMM-train ``model`` toward the budget's structure (``structured``: kept channels
    per group, by default the uniform fraction that meets the budget, or ``structure``;
    else unstructured sparsity), hard-prune, purify, fine-tune; in place.

    ADMM (Zhang et al. 2018, arXiv 1804.03294) trains ``epochs`` epochs of SGD at
    ``admm_lr`` with the augmented term's weight ``rho``, grown by ``rho_growth`` each
    epoch; ``purification`` then removes kept channels that change the loss by less than
    ``epsilon`` and re-opens pruned ones that help, while the budget allows."""
    if not structured:
        search.method = "admm_unstructured"
        return _unstructured(search, epochs, admm_lr, rho, rho_growth)
    model, task, space = search.model, search.task, search.space
    if isinstance(structure, dict):
        structure = [structure.get(n, c) for n, c in zip(space.names, space.channels)]
    target = space.uniform() if structure is None else space.clip(structure)
    if not space.fits(target):
        raise ValueError(f"the given structure is over budget (excess {space.excess(target):.3f})")
    history: list[dict] = []
    members = {m.module for g in space.groups for m in g.members}
    params = {n: p for n, p in model.named_parameters() if n.rpartition(".")[0] in members}
    project = _StructuredProjection(model, space, target)
    _train(search, params, project, epochs, admm_lr, rho, rho_growth, history)
    gates = [torch.ones(g.channels) for g in space.groups]
    for gi, idxs in project.plan.items():
        gates[gi][list(idxs)] = 0.0
    details = {}
    if purification:
        gates, details = purify(model, space, gates, task, epsilon)
    history.append(details)
    plan = {
        g: np.flatnonzero(gate.numpy() == 0).tolist()
        for g, gate in zip(space.groups, gates)
        if (gate == 0).any()
    }
    space.graph.prune(plan)
    return search.finish([int(g.sum()) for g in gates], history=history, pruned=True)


def _train(search: Search, params, project, epochs, lr, rho, growth, history) -> _Augmented:
    """ADMM's training: SGD on the task loss plus the augmented term pulling ``params``
    toward their projection, the dual variables updated after every epoch."""
    term = _Augmented(params, rho)
    term.z = project({n: p.detach() for n, p in params.items()})
    fit(
        search.model,
        search.task,
        epochs=epochs,
        lr=lr,
        optimizer="sgd",
        losses=[term],
        callbacks=[_Dual(term, project, growth, history)],
        seed=search.seed,
        progress=fit_progress("admm: training", search.progress),
    )
    return term


def _weights(model: nn.Module, ignored) -> dict[str, nn.Parameter]:
    layers = (nn.modules.conv._ConvNd, nn.Linear)
    return {
        f"{n}.weight": m.weight
        for n, m in model.named_modules()
        if isinstance(m, layers) and n not in set(ignored)
    }


def _top(values: dict[str, torch.Tensor], density: float) -> dict[str, torch.Tensor]:
    """Masks keeping the ``density`` fraction of largest magnitudes of each tensor (per
    layer, so that no layer is emptied)."""
    masks = {}
    for n, v in values.items():
        flat = v.abs().flatten()
        keep = torch.topk(flat, max(1, int(round(density * flat.numel())))).indices
        mask = torch.zeros_like(flat)
        mask[keep] = 1.0
        masks[n] = mask.view_as(v)
    return masks


def _unstructured(search: Search, epochs, admm_lr, rho, growth) -> SearchResult:
    model, task, budget, ignored = search.model, search.task, search.budget, search.ignored
    x = task.example_inputs()
    dense = measure_costs(model, x, budget, sparse=True)
    limits = budget.limits(dense)
    budget.check_sparse(dense, limits)
    params = _weights(model, ignored)

    def masked_costs(density: float):
        trial = copy.deepcopy(model)
        masks = _top({n: p.detach() for n, p in params.items()}, density)
        with torch.no_grad():
            for n, p in dict(trial.named_parameters()).items():
                if n in masks:
                    p.mul_(masks[n])
        return measure_costs(trial, x, budget, sparse=True)

    density = bisect_fraction(lambda d: d > 0 and budget.fits(masked_costs(d), limits))
    if density <= 0:
        budget.check_reachable(masked_costs(1e-6), limits, "unstructured sparsity")
    history: list[dict] = [{"density": density}]

    def project(values):
        masks = _top(values, density)
        return {n: values[n] * masks[n] for n in values}

    term = _train(search, params, project, epochs, admm_lr, rho, growth, history)
    masks = _top({n: p.detach() + term.u[n] for n, p in params.items()}, density)
    modules = dict(model.named_modules())
    for n, mask in masks.items():
        parametrize.register_parametrization(
            modules[n[: -len(".weight")]], "weight", WeightMask(mask)
        )
    search.finetune()
    model.eval()
    costs = measure_costs(model, x, budget, sparse=True)
    return search.result(None, costs, limits, history=history)
