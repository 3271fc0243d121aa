"""Calibration data for data-driven criteria: batches, gradients and feature maps, computed
once per graph and shared by all its groups."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.task import Task, call, split_batch
from ..graph import DependencyGraph, Group

DEFAULT_BATCHES = 4
MAX_ROWS = 2048  # feature rows (samples x positions) kept per layer


def batches(data, num_batches: int = DEFAULT_BATCHES, batch_size: int = 64) -> list:
    """``num_batches`` (inputs, labels) batches from a Task (training split, fixed order) or
    from any iterable of batches; the inputs of a model with several are a tuple."""
    if data is None:
        raise ValueError(
            "this importance criterion needs calibration data: pass data=task "
            "(a secateurs Task) or an iterable of (inputs, labels) batches"
        )
    source: Iterable = (
        data.loader("train", batch_size=batch_size, shuffle=False)
        if isinstance(data, Task)
        else data
    )
    out = []
    for batch in source:
        out.append(split_batch(batch) if isinstance(batch, (tuple, list)) else batch)
        if len(out) == num_batches:
            break
    if not out:
        raise ValueError("the calibration data holds no batch")
    return out


def _cache(graph: DependencyGraph) -> dict:
    return graph.__dict__.setdefault("_calibration", {})


def gradients(graph: DependencyGraph, data) -> dict[int, torch.Tensor]:
    """Per parameter (by id): the sum over calibration batches of w * dL/dw and of |dL/dw|,
    with the cross-entropy loss; computed once per graph."""
    cache = _cache(graph)
    if "grads" not in cache:
        model = graph.model
        params = list(model.parameters())
        taylor = {id(p): torch.zeros_like(p) for p in params}
        magnitude = {id(p): torch.zeros_like(p) for p in params}
        was_training = model.training
        model.eval()
        saved = [p.grad for p in params]
        try:
            for x, y in batches(data):
                for p in params:
                    p.grad = None
                with torch.enable_grad():
                    F.cross_entropy(call(model, x), y).backward()
                for p in params:
                    if p.grad is not None:
                        taylor[id(p)] += p.detach() * p.grad
                        magnitude[id(p)] += p.grad.abs()
        finally:
            for p, g in zip(params, saved):
                p.grad = g
            model.train(was_training)
        cache["grads"] = (taylor, magnitude)
    return cache["grads"]


def features(graph: DependencyGraph, group: Group, data) -> tuple[np.ndarray, str] | None:
    """The group's channels as seen by one of its consumers: a (rows x channels) matrix of
    activations on calibration data, and that consumer's module path. None when no consumer
    reads each channel through exactly one input index (a flatten, say)."""
    consumer = _consumer(group)
    if consumer is None:
        return None
    member, path = consumer
    cache = _cache(graph).setdefault("features", {})
    if path not in cache:
        cache[path] = _capture(graph, path, data)
    x = cache[path]  # rows x in-channels of that module
    sel = group.member == member
    order = np.argsort(group.unit[sel])
    return x[:, group.index[sel][order]], path


def _consumer(group: Group):
    """A member with axis "in" whose slots give each channel exactly one input index."""
    for m, member in enumerate(group.members):
        if member.axis != "in":
            continue
        units = group.unit[group.member == m]
        if len(units) == group.channels and len(np.unique(units)) == group.channels:
            return m, member.module
    return None


def _capture(graph: DependencyGraph, path: str, data) -> np.ndarray:
    module = graph.module(path)
    rows: list[torch.Tensor] = []

    def hook(mod, args):
        x = args[0].detach()
        x = x.movedim(1, -1) if x.dim() > 2 and not isinstance(mod, torch.nn.Linear) else x
        rows.append(x.reshape(-1, x.shape[-1]))

    handle = module.register_forward_pre_hook(hook)
    model = graph.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in batches(data):
                call(model, x)
    finally:
        handle.remove()
        model.train(was_training)
    out = torch.cat(rows).double()
    if len(out) > MAX_ROWS:
        keep = torch.randperm(len(out), generator=torch.Generator().manual_seed(0))[:MAX_ROWS]
        out = out[keep]
    return out.numpy()
