"""``layers``: layer pruning, whole blocks removed from a model's depth (LayerPrune,
Elkerdawy, Elhoushi, Singh & Ray 2020, arXiv 2007.05667).

Channel pruning thins every layer but keeps them all, and each layer costs a runtime some
fixed time whatever its width (a kernel launch, a layout reorder, the Python call). Removing
a layer removes that cost too, so its MACs turn into time more fully.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_finite_model, check_float, check_int, in_place, model_runs_on
from ..data.task import call
from ..graph.graph import remove_layer, set_module
from ..measure import profile
from .calibration import batches
from .structured import SizeChange

MAC_TOLERANCE = 0.02  # relative to the target


@dataclass(frozen=True)
class LayerReport(SizeChange):
    """The layers removed, in order, each with its cost when it went (the calibration
    loss it added per fraction of the MACs it removed), and the params and MACs before
    and after, measured."""

    removed: tuple[str, ...]
    costs: tuple[float, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    def __str__(self) -> str:
        names = ", ".join(self.removed) or "none"
        return f"removed {len(self.removed)} layers ({names}): " + self._sizes()


def removable(model: nn.Module, example_inputs) -> list[str]:
    """Paths of the modules of ``model`` :func:`layers` may remove: each holds a weight
    and, in a forward pass on ``example_inputs``, is called once, on one tensor, returning a
    tensor of the same shape, so that the model runs on with the module replaced by the identity. A
    residual block ``x + f(x)`` qualifies whole, as do a stride-1 depthwise unit or a
    width-preserving block of a plain network; a module inside one that qualifies is left
    to it: the outermost unit goes (units inside blocks, tried too, lost accuracy)."""
    calls: dict[str, list[bool]] = {}

    def hook(path):
        def record(module, args, output):
            same = (
                len(args) == 1
                and isinstance(args[0], torch.Tensor)
                and isinstance(output, torch.Tensor)
                and args[0].shape == output.shape
            )
            calls.setdefault(path, []).append(same)

        return record

    handles = [
        m.register_forward_hook(hook(path))
        for path, m in model.named_modules()
        if path and any(p.dim() > 1 for p in m.parameters())
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model_runs_on(example_inputs, "layers"):
            model(example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ok = [path for path, seen in calls.items() if seen == [True]]
    return [p for p in ok if not any(p.startswith(q + ".") for q in ok)]


def _cheapest(
    model, candidates, calibration, saved: dict[str, int], macs: int, floor: float, total: int
):
    """The candidate whose removal adds the least calibration loss per fraction of the
    ``total`` MACs it removes (``saved``), among those after which at least ``floor`` of
    the model's ``macs`` MACs are left: (cost, path, MACs after), or None."""
    base = _loss(model, calibration)
    best = None
    for path in candidates:
        after = macs - saved[path]
        if not (saved[path] > 0 and after >= floor):
            continue
        module = set_module(model, path, nn.Sequential())
        try:
            cost = (_loss(model, calibration) - base) / (saved[path] / total)
        finally:  # the trial never outlives its scoring
            set_module(model, path, module)
        if best is None or cost < best[0]:
            best = (cost, path, after)
    return best


def _loss(model: nn.Module, data: list) -> float:
    with torch.no_grad():
        return sum(float(F.cross_entropy(call(model, x), y)) for x, y in data) / len(data)


@in_place
def layers(
    model: nn.Module,
    example_inputs,
    *,
    target_macs: float | None = None,
    count: int | None = None,
    data=None,
    candidates: list[str] | None = None,
    num_batches: int = 4,
) -> LayerReport:
    """Remove whole layers (blocks) from ``model`` in place, the least costly first.

    Say how much with one of ``target_macs`` (the fraction of MACs to keep: layers go while
    the model keeps at least that, within 2%; whole layers rarely land on it exactly, so
    :func:`secateurs.prune.channels` can take the rest) or ``count`` (how many layers).
    The candidates are :func:`removable` (or the paths in ``candidates``). At each step,
    every candidate is taken out in turn and the cross-entropy on ``num_batches``
    calibration batches of ``data`` (a Task or (inputs, labels) batches) measured; the
    one that adds the least loss per fraction of the MACs it removes goes, and the rest
    are scored again. The model must then be fine-tuned (``sc.fit``), as after any pruning.
    ``example_inputs``: a batch of the model's inputs, to trace it.
    """
    check_finite_model(model, "layers")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (target_macs is None) == (count is None):
        raise ValueError("give exactly one of target_macs= or count=")
    if target_macs is not None:
        target_macs = check_float("target_macs", target_macs, minimum=0.0, strict_minimum=True)
        if target_macs > 1:
            raise ValueError(
                f"target_macs is the fraction of MACs kept, in (0, 1]; got {target_macs}"
            )
    if count is not None:
        count = check_int("count", count, minimum=0)
    num_batches = check_int("num_batches", num_batches, minimum=1)
    if data is None:
        raise ValueError(
            "layers scores each removal by the loss on calibration data: pass data=task "
            "(a secateurs Task) or an iterable of (inputs, labels) batches"
        )
    x = example_inputs
    allowed = removable(model, x)
    if candidates is None:
        candidates = allowed
    else:
        wrong = [c for c in candidates if c not in allowed]
        if wrong:
            raise ValueError(
                f"candidates {wrong} cannot be removed (each must hold a weight and return a "
                f"tensor of its input's shape); the removable ones: {sorted(allowed)}"
            )
    if count is not None and count > len(candidates):
        raise ValueError(
            f"count={count}, but the model has {len(candidates)} removable layers: "
            f"{sorted(candidates)}"
        )
    calibration = batches(data, num_batches)
    before = profile(model, x, latency=False)
    # the candidates keep their input's shape and do not nest, so what removing one saves
    # is its own layers' MACs, whatever else has gone
    saved = {
        path: sum(
            op.macs for op in before.layers if op.module == path or op.module.startswith(path + ".")
        )
        for path in candidates
    }
    # MACs: remove until at most ``goal`` are left, never going below ``floor``
    floor = 0.0 if target_macs is None else target_macs * (1 - MAC_TOLERANCE) * before.macs
    goal = 0.0 if target_macs is None else target_macs * (1 + MAC_TOLERANCE) * before.macs
    was_training = model.training
    model.eval()
    removed: list[str] = []
    costs: list[float] = []
    macs = before.macs
    try:
        while candidates and (len(removed) < count if count is not None else macs > goal):
            best = _cheapest(model, candidates, calibration, saved, macs, floor, before.macs)
            if best is None:  # every removal left would cross the target
                break
            cost, path, macs = best
            remove_layer(model, path)
            removed.append(path)
            costs.append(cost)
            candidates = [c for c in candidates if c != path]
    finally:
        model.train(was_training)
    after = profile(model, x, latency=False)
    return LayerReport(
        tuple(removed), tuple(costs), before.params, after.params, before.macs, after.macs
    )
