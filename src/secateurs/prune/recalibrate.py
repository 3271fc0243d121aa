"""Batch-norm statistics re-estimated after a structural change.

Removing channels changes what every later batch-norm layer sees, but its running mean and
variance still describe the unpruned network, so a pruned model scores near chance until it
is fine-tuned. Re-estimating those statistics on a few batches, with no weight changed, is
the cheap fix of EagleEye (Li, Wang, Li, Lin & Zhang 2020, arXiv 2007.02491), which also
makes candidates comparable before fine-tuning."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int, in_place
from ..data.task import call, map_inputs
from .calibration import batches as calibration_batches

DEFAULT_BATCHES = 8


@in_place
def recalibrate_bn(
    model: nn.Module, data, *, batches: int = DEFAULT_BATCHES, batch_size: int = 64
) -> int:
    """Re-estimate the running mean and variance of every batch-norm layer of ``model`` (in
    place) from ``batches`` batches of ``data`` (a Task: its training split in a fixed
    order, in batches of ``batch_size``; or an iterable of (inputs, labels) batches or of
    input tensors), as an equal
    average over them; no weight changes, and every module is left in the mode it was in.
    Returns how many batch-norm layers were re-estimated (0 for a model without one, which
    is left as it was). If a batch fails, the statistics are put back as they were."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batches = check_int("batches", batches, minimum=1)
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return 0
    got = calibration_batches(data, batches, batch_size)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    device = next(iter([*model.parameters(), *model.buffers()])).device  # BN buffers at least
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: every batch counts the same
            m.train()
        with torch.no_grad():
            for batch in got:
                x = batch[0] if isinstance(batch, tuple) else batch  # batches() split it
                call(model, map_inputs(lambda t: t.to(device), x))
    except BaseException:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        raise
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, mode in modes.items():
            module.train(mode)
    return len(norms)
