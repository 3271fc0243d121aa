"""CPU latency: the median of repeated forward passes after warm-up, with a fixed thread count."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.no_grad()
def measure_latency(
    model: nn.Module, example_inputs, repeats: int = 20, warmup: int = 3, threads: int = 1
) -> float:
    """Median wall time of one forward pass in milliseconds (eval mode, no gradients)."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    previous_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return statistics.median(times) * 1e3
