"""CPU latency: the median of repeated forward passes after warm-up, with a fixed thread count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` torch threads, giving the caller's count back after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def measure_latency(
    model: nn.Module, example_inputs, *, repeats: int = 20, warmup: int = 3, threads: int = 1
) -> float:
    """Median wall time of one forward pass of ``model`` on ``example_inputs`` in milliseconds
    (eval mode, no gradients, ``threads`` threads; ``repeats`` timed passes after
    ``warmup`` untimed ones)."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads):
            for _ in range(warmup):
                model(*inputs)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(*inputs)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1e3


def time_in_turns(
    calls: Mapping[str, Callable[[], object]], *, repeats: int = 200, warmup: int = 5
) -> dict[str, float]:
    """Median wall time in milliseconds of each of ``calls``, made one call at a time in
    turns, ``repeats`` times (``warmup`` untimed calls of each first). A machine's speed
    drifts, by tens of percent within seconds on a shared host; calls taken in turns share
    the drift, so the ratio of two medians is steadier than that of two separate timings."""
    if not calls:
        raise ValueError("calls is empty: give at least one name -> function to time")
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def compare_latency(
    models: Mapping[str, nn.Module],
    example_inputs,
    *,
    repeats: int = 200,
    warmup: int = 5,
    threads: int = 1,
) -> dict[str, float]:
    """Median latency in milliseconds of each of ``models`` on ``example_inputs`` (eval
    mode, no gradients, ``threads`` threads), their forward passes timed in turns
    (:func:`time_in_turns`, ``repeats`` times after ``warmup``): for a speedup, say
    ``ms["parent"] / ms["pruned"]``."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    modes = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()

    def forward(model):
        def run():
            with torch.no_grad():
                model(*inputs)

        return run

    try:
        with torch_threads(threads):
            return time_in_turns(
                {n: forward(m) for n, m in models.items()}, repeats=repeats, warmup=warmup
            )
    finally:
        for name, model in models.items():
            model.train(modes[name])
