"""Channel importance criteria: ``@register_importance("name")`` on a function
``(graph, group, data=None, seed=0) -> scores`` (one score per channel; low is pruned first)."""

from __future__ import annotations

import numpy as np

from .._registry import Registry
from ..graph import DependencyGraph, Group
from ..graph.slices import PRODUCER_AXES, axis_norms, axis_power_sums

IMPORTANCE: Registry = Registry("importance")
register_importance = IMPORTANCE.register


def list_importance() -> list[str]:
    return IMPORTANCE.names()


def _norm_scores(graph: DependencyGraph, group: Group, p: int) -> np.ndarray:
    """Sum of the p-norms of the weights that produce each channel (its filters), or of all
    its weights when no layer produces it (attention embeddings, custom parameters)."""
    producer = np.array([m.axis in PRODUCER_AXES for m in group.members])
    norms = [
        axis_norms(graph.module(m.module), m.axis, p) if is_producer else None
        for m, is_producer in zip(group.members, producer)
    ]
    counts = group.axis_counts()[0]
    has_producer = counts[:, producer].sum(1) > 0
    if has_producer.all():
        filled = [v if v is not None else np.zeros(0) for v in norms]
        return group.per_channel(filled, producer)
    norms = [
        v if v is not None else axis_norms(graph.module(m.module), m.axis, p)
        for m, v in zip(group.members, norms)
    ]
    return np.where(has_producer, group.per_channel(norms, producer), group.per_channel(norms))


@register_importance("l1")
def l1(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """L1 norm of each channel's filters (Li et al. 2016, arXiv 1608.08710)."""
    return _norm_scores(graph, group, 1)


@register_importance("l2")
def l2(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """L2 norm of each channel's filters (Li et al. 2016, arXiv 1608.08710)."""
    return _norm_scores(graph, group, 2)


def _depthwise(module) -> bool:
    groups = getattr(module, "groups", 1)
    return groups > 1 and module.in_channels == module.out_channels == groups


def _group_norm_scores(graph: DependencyGraph, group: Group, p: int) -> np.ndarray:
    """The p-norm of every weight tied to each channel across its group: the filters that
    produce it, its BatchNorm scale, and the next layers' weights that read it."""
    outputs = {m.module for m in group.members if m.axis == "out"}
    sums, counted = [], []
    for m in group.members:
        module = graph.module(m.module)
        # a depthwise convolution's input and output channel name the same weights
        twin = m.axis == "in" and m.module in outputs and _depthwise(module)
        counted.append(not twin)
        sums.append(None if twin else axis_power_sums(module, m.axis, p).double().numpy())
    total = group.per_channel(sums, np.array(counted))
    return total if p == 1 else total ** (1.0 / p)


@register_importance("group_l1")
def group_l1(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """L1 norm of all of a channel's coupled weights, in and out (group-level magnitude,
    Fang et al. 2023, DepGraph, arXiv 2301.12900)."""
    return _group_norm_scores(graph, group, 1)


@register_importance("group_l2")
def group_l2(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """L2 norm of all of a channel's coupled weights, in and out (group-level magnitude,
    Fang et al. 2023, DepGraph, arXiv 2301.12900)."""
    return _group_norm_scores(graph, group, 2)


@register_importance("random")
def random(graph: DependencyGraph, group: Group, data=None, seed: int = 0) -> np.ndarray:
    """Uniform random scores: the baseline every criterion must beat (Blalock et al. 2020)."""
    first = group.units[0][0]
    salt = sum(map(ord, f"{first.module}:{first.axis}:{first.index}"))
    return np.random.default_rng([seed, salt]).random(len(group.units))
