"""Importance criteria of the TinyML pruning literature, beyond filter norms.

Each scores the channels of one dependency-graph group; low scores are removed first.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from .._checks import check_float
from ..graph import DependencyGraph, Group
from ..graph.slices import PRODUCER_AXES, axis_norms
from ..train import Callback, FitState
from .calibration import features, gradients
from .importance import _norm_scores, register_importance

log = logging.getLogger(__name__)


def _producer_mask(group: Group) -> np.ndarray:
    return np.array([m.axis in PRODUCER_AXES for m in group.members])


def _scores_from(graph, group, values, mask=None) -> np.ndarray:
    """Per channel: sum over the group's slots (of ``mask`` members) of |values(w)|."""
    mask = _producer_mask(group) if mask is None else mask
    if not mask.any():
        mask = np.ones(len(group.members), dtype=bool)
    sums = [
        axis_norms(graph.module(m.module), m.axis, 1, values) if keep else np.zeros(0)
        for m, keep in zip(group.members, mask)
    ]
    return group.per_channel(sums, mask)


@register_importance("bn_scale")
def bn_scale(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """|gamma| of the BatchNorm layers on each channel (network slimming; Liu et al. 2017,
    arXiv 1708.06519); groups without BatchNorm fall back to the L1 filter norm."""
    mask = np.array(
        [
            m.axis == "chan" and isinstance(graph.module(m.module), nn.modules.batchnorm._BatchNorm)
            for m in group.members
        ]
    )
    if not mask.any():
        return _norm_scores(graph, group, 1)
    return _scores_from(graph, group, None, mask)


@register_importance("fpgm")
def fpgm(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """Distance of each filter to the others (He et al. 2019, arXiv 1811.00250): filters
    near the geometric median are replaceable by the rest and score low."""
    rows = []
    for m in group.members:
        if m.axis != "out":
            continue
        module = graph.module(m.module)
        w = module.weight.detach()
        w = w.transpose(0, 1) if isinstance(module, nn.modules.conv._ConvTransposeNd) else w
        sel = group.member == group.members.index(m)
        per_unit = torch.zeros(group.channels, w[0].numel(), dtype=torch.float64)
        per_unit[torch.as_tensor(group.unit[sel])] = w.reshape(w.shape[0], -1)[
            torch.as_tensor(group.index[sel])
        ].double()
        rows.append(per_unit)
    if not rows:
        return _norm_scores(graph, group, 2)
    filters = torch.cat(rows, 1)
    return torch.cdist(filters, filters).sum(1).numpy()


@register_importance("taylor")
def taylor(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """First-order Taylor estimate of the loss change: |w · dL/dw| over each channel's
    weights, accumulated over calibration batches (Molchanov et al. 2019, arXiv 1906.10771)."""
    products, _ = gradients(graph, data)
    return _scores_from(graph, group, lambda w: products[id(w)], np.ones(len(group.members), bool))


@register_importance("grad_magnitude")
def grad_magnitude(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """Gradient tracking (Wang, Ji & Yuan 2022, built on GraSP): a channel is kept when it is
    among the top by gradient magnitude (G) or by weight magnitude (A), S = G | A. Scores
    are the better of the two rank fractions, so the top-k of the score is that union."""
    _, magnitude = gradients(graph, data)
    grads = _scores_from(graph, group, lambda w: magnitude[id(w)])
    weights = _norm_scores(graph, group, 1)
    return np.maximum(_rank_fraction(grads), _rank_fraction(weights))


def _rank_fraction(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return (ranks + 1) / len(values)


def _take_out_in_turn(explained) -> np.ndarray:
    """Scores from repeatedly taking out the channel the remaining ones explain best: the
    first taken scores lowest, so of two duplicates only one goes. ``explained`` is an object
    with ``values()`` (one number in [0, 1] per remaining channel) and ``remove(i)``."""
    n = explained.size
    alive = list(range(n))
    order = []
    while len(alive) > 1:
        pick = int(np.argmax(explained.values()))
        order.append(alive.pop(pick))
        explained.remove(pick)
    order += alive
    scores = np.empty(n)
    scores[order] = np.arange(n, dtype=float) / n
    return scores


class _HSIC:
    """Normalized HSIC between channels with Gaussian kernels (median bandwidth); a
    channel is explained as much as its most similar remaining channel."""

    def __init__(self, x: np.ndarray) -> None:
        rows = int(min(256, max(32, np.sqrt(2e7 / max(1, x.shape[1])))))
        x = x[:rows]
        n = len(x)
        h = np.eye(n) - 1.0 / n
        kernels = np.empty((x.shape[1], n * n), dtype=np.float32)
        for c in range(x.shape[1]):
            d = (x[:, c : c + 1] - x[:, c : c + 1].T) ** 2
            bandwidth = np.median(d[d > 0]) if (d > 0).any() else 1.0
            kernels[c] = (h @ np.exp(-d / bandwidth) @ h).ravel()
        gram = (kernels @ kernels.T).astype(np.float64)
        norms = np.sqrt(np.clip(np.diag(gram), 1e-12, None))
        self.similarity = gram / np.outer(norms, norms)
        np.fill_diagonal(self.similarity, -np.inf)
        self.size = x.shape[1]

    def values(self) -> np.ndarray:
        return self.similarity.max(1)

    def remove(self, i: int) -> None:
        keep = np.arange(len(self.similarity)) != i
        self.similarity = self.similarity[np.ix_(keep, keep)]


@register_importance("hsic")
def hsic(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """Similarity-aware redundancy (Cheng et al. 2024): the normalized Hilbert-Schmidt
    independence criterion between channels' activations on calibration data; a channel
    another one already explains (high HSIC) scores low, taken out one at a time."""
    found = features(graph, group, data)
    if found is None:
        return _norm_scores(graph, group, 2)
    return _take_out_in_turn(_HSIC(found[0]))


class _LinearFit:
    """R² of each channel regressed on all the other remaining ones: 1 - 1/(P_cc Σ_cc)
    with P the inverse covariance, downdated in O(n²) as channels are taken out."""

    def __init__(self, x: np.ndarray) -> None:
        cov = np.cov(x, rowvar=False)
        cov = np.atleast_2d(cov) + 1e-9 * (np.trace(np.atleast_2d(cov)) + 1) * np.eye(x.shape[1])
        self.var = np.diag(cov).copy()
        self.precision = np.linalg.inv(cov)
        self.size = x.shape[1]

    def values(self) -> np.ndarray:
        return 1.0 - 1.0 / (np.diag(self.precision) * self.var)

    def remove(self, i: int) -> None:
        p = self.precision
        keep = np.arange(len(p)) != i
        self.precision = p[np.ix_(keep, keep)] - np.outer(p[keep, i], p[i, keep]) / p[i, i]
        self.var = self.var[keep]


@register_importance("linear_redundancy")
def linear_redundancy(graph: DependencyGraph, group: Group, data=None, seed: int = 0):
    """Channels whose activations are linear combinations of the others (Wang 2023): the
    R² of a least-squares fit on calibration data, taken out one at a time; on removal the
    fit is folded into the next layer (see :func:`compensate`)."""
    found = features(graph, group, data)
    if found is None:
        return _norm_scores(graph, group, 2)
    return _take_out_in_turn(_LinearFit(found[0]))


@torch.no_grad()
def compensate(graph: DependencyGraph, plan: dict, data) -> None:
    """Fold each removed channel's least-squares fit on the kept ones into the consumer
    layer: W[:, kept] += W[:, removed] · A and bias += W[:, removed] · b, where
    x_removed ≈ x_kept · A + b on calibration data. Exact when the redundancy is exact
    (for convolutions, away from zero-padded borders when b ≠ 0). ``graph`` is the model's
    dependency graph, ``plan`` the channels to remove (``{group: indices}``) and ``data``
    the calibration batches."""
    for group, removed in plan.items():
        found = features(graph, group, data)
        if found is None or not len(removed):
            continue
        x, path = found
        module = graph.module(path)
        if (
            not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))
            or getattr(module, "groups", 1) != 1
        ):
            continue
        m = next(
            i for i, mem in enumerate(group.members) if mem.module == path and mem.axis == "in"
        )
        sel = group.member == m
        index_of_unit = np.empty(group.channels, dtype=np.int64)
        index_of_unit[group.unit[sel]] = group.index[sel]
        removed = np.asarray(sorted(removed))
        kept = np.setdiff1d(np.arange(group.channels), removed)
        design = np.hstack([x[:, kept], np.ones((len(x), 1))])
        coef, *_ = np.linalg.lstsq(design, x[:, removed], rcond=None)  # (kept + 1) x removed
        a = torch.as_tensor(coef[:-1], dtype=module.weight.dtype)
        b = torch.as_tensor(coef[-1], dtype=module.weight.dtype)
        w = module.weight
        w_removed = w[:, index_of_unit[removed]]  # out x removed (x kernel)
        w[:, index_of_unit[kept]] += torch.einsum("or...,kr->ok...", w_removed, a)
        if module.bias is not None:
            module.bias += torch.einsum("or...,r->o", w_removed, b)
        elif b.abs().max() > 1e-6:
            log.info("'%s' has no bias to absorb the fit's intercept", path)


linear_redundancy.compensate = compensate


class GradientTracking(Callback):
    """Gradient tracking during training (Wang, Ji & Yuan 2022): after every step, each group
    keeps S = G | A, its top ``1 - ratio`` channels by gradient magnitude (G) and by filter
    magnitude (A); the other filters are set to zero but keep receiving gradients, so a
    filter whose gradient grows rejoins S at the next step. ``changes`` counts the steps at
    which S changed. Prune afterwards with ``channels(..., importance="l1")``."""

    def __init__(self, example_inputs, ratio: float = 0.5, ignored=()) -> None:
        self.example_inputs = example_inputs
        self.ratio = check_float("ratio", ratio, minimum=0.0, maximum=1.0)
        self.ignored = ignored
        self.changes = 0
        self._last: dict | None = None

    def on_fit_start(self, state: FitState) -> None:
        self.graph = DependencyGraph(state.model, self.example_inputs, ignored=self.ignored)

    def on_step_end(self, state: FitState) -> None:
        graph, plan = self.graph, {}
        for group in graph.groups():
            keep = group.channels - int(self.ratio * group.channels)
            grads = _scores_from(graph, group, _grad_or_zero)
            weights = _norm_scores(graph, group, 1)
            top_g = np.argsort(-grads, kind="stable")[:keep]
            top_a = np.argsort(-weights, kind="stable")[:keep]
            zeroed = np.setdiff1d(np.arange(group.channels), np.union1d(top_g, top_a))
            if zeroed.size:
                plan[group] = zeroed
        current = {id(g): tuple(v) for g, v in plan.items()}
        if self._last is not None and current != self._last:
            self.changes += 1
        self._last = current
        graph.zero(plan, axes=PRODUCER_AXES)


def _grad_or_zero(w: torch.Tensor) -> torch.Tensor:
    return w.grad if w.grad is not None else torch.zeros_like(w)


class SoftFilterPruning(Callback):
    """Soft filter pruning (He et al. 2018, arXiv 1808.06866; surveyed by Zhang et al. 2021):
    at the end of every epoch the lowest ``ratio`` of each group's filters (by ``importance``)
    are set to zero, but they stay in the model and keep receiving gradients, so a filter
    that becomes useful again grows back before the next epoch's choice. ``history`` holds
    the zeroed channels per epoch; remove them at the end with ``channels(..., ratio)``."""

    def __init__(self, example_inputs, ratio: float = 0.3, importance: str = "l2", ignored=()):
        self.example_inputs = example_inputs
        self.ratio = check_float("ratio", ratio, minimum=0.0, maximum=1.0)
        self.importance = importance
        self.ignored = ignored
        self.history: list[dict[int, tuple[int, ...]]] = []
        self.regrowth: list[float] = []  # mean L2 norm regained by last epoch's zeroed filters

    def on_fit_start(self, state: FitState) -> None:
        self.graph = DependencyGraph(state.model, self.example_inputs, ignored=self.ignored)
        self._zeroed: dict = {}

    def on_epoch_end(self, state: FitState) -> None:
        from .structured import plan

        if self._zeroed:
            norms = [_norm_scores(self.graph, g, 2)[list(v)] for g, v in self._zeroed.items()]
            self.regrowth.append(float(np.concatenate(norms).mean()))
        chosen = plan(self.graph, self.ratio, importance=self.importance)
        self.graph.zero(chosen, axes=PRODUCER_AXES)
        self._zeroed = chosen
        groups = self.graph.groups()
        self.history.append({groups.index(g): tuple(v) for g, v in chosen.items()})
