"""Choosing which channels of a group to remove, under grouped-layer constraints."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def lowest(
    scores: np.ndarray,
    count: int,
    block_counts: list[np.ndarray],
    axis_counts: np.ndarray,
    axis_sizes: np.ndarray,
) -> list[int]:
    """The ``count`` lowest-scoring channels that leave every layer axis at least one slot
    (``axis_counts``: channels x axes, ``axis_sizes``: slots per axis). Where layers are
    grouped (``block_counts``: one channels x blocks matrix per constraint), the cheapest set
    that removes equally many from every block, as close to ``count`` as possible."""
    if count <= 0:
        return []
    if len(block_counts) == 1 and _one_block_each(block_counts[0]):
        chosen = _balanced_greedy(scores, count, block_counts[0], axis_counts, axis_sizes)
        if chosen is not None:
            return chosen
    if block_counts:
        return _balanced(scores, count, block_counts, axis_counts, axis_sizes)
    room = axis_sizes - 1
    order = np.argsort(scores, kind="stable")
    if (axis_counts[order[:count]].sum(0) <= room).all():
        return sorted(order[:count].tolist())  # the usual case: no layer would be emptied
    chosen = []
    for u in order:
        if len(chosen) == count:
            break
        if (axis_counts[u] <= room).all():
            room = room - axis_counts[u]
            chosen.append(int(u))
    return sorted(chosen)


def _one_block_each(counts: np.ndarray) -> bool:
    """Whether every channel has exactly one slot in exactly one block (a grouped
    convolution's channels, the pieces of a split)."""
    return bool(((counts == 0) | (counts == 1)).all() and (counts.sum(1) == 1).all())


def _balanced_greedy(scores, count, counts, axis_counts, axis_sizes) -> list[int] | None:
    """The integer program's answer where each channel sits in one block: the r lowest of
    every block for the largest r that takes at most ``count`` (the cost is separable per
    block, so this is optimal), unless that choice would empty a layer axis: then None,
    and the integer program decides."""
    block = counts.argmax(1)
    members = [np.flatnonzero(block == b) for b in range(counts.shape[1])]
    ranked = [m[np.argsort(scores[m], kind="stable")] for m in members]
    r = min(count // len(ranked), min(len(m) for m in ranked))
    chosen = np.concatenate([m[:r] for m in ranked]).astype(np.int64)
    if (axis_counts[chosen].sum(0) <= axis_sizes - 1).all():
        return sorted(chosen.tolist())
    return None


def _balanced(scores, count, block_counts, axis_counts, axis_sizes) -> list[int]:
    """A small integer program: binary x per channel, one integer r_k per constraint,
    sum_u A_k[u, b] x_u = r_k for every block b, sum x <= count, no axis emptied; remove as
    many as possible, then the least important."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(scores)
    k = len(block_counts)
    s = np.asarray(scores, dtype=float)
    s = s / (np.abs(s).max() + 1e-12)
    cost = np.concatenate([s - (n + 1.0), np.zeros(k)])
    rows, lower, upper = [], [], []
    for j, counts in enumerate(block_counts):
        for b in range(counts.shape[1]):
            row = np.zeros(n + k)
            row[:n] = counts[:, b]
            row[n + j] = -1.0
            rows.append(row)
            lower.append(0.0)
            upper.append(0.0)
    total = np.zeros(n + k)
    total[:n] = 1.0
    rows.append(total)
    lower.append(0.0)
    upper.append(float(count))
    for a in range(axis_counts.shape[1]):
        row = np.zeros(n + k)
        row[:n] = axis_counts[:, a]
        rows.append(row)
        lower.append(0.0)
        upper.append(float(axis_sizes[a] - 1))
    result = milp(
        cost,
        constraints=LinearConstraint(np.array(rows), lower, upper),
        integrality=np.ones(n + k),
        bounds=Bounds(np.zeros(n + k), np.concatenate([np.ones(n), np.full(k, float(n))])),
        options={"time_limit": 20.0},
    )
    if result.x is None:
        log.warning("no balanced choice of channels found; this group is left unpruned")
        return []
    return sorted(np.flatnonzero(result.x[:n] > 0.5).tolist())
