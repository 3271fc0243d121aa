"""Latency in turns: sc.measure.time_in_turns and compare_latency."""

import pytest
import torch
from torch import nn

import secateurs as sc


def test_calls_are_timed_one_at_a_time_in_turns_after_a_warm_up():
    order = []
    ms = sc.measure.time_in_turns(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=2
    )
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())


def test_no_calls_is_an_error_that_says_what_to_give():
    with pytest.raises(ValueError, match="at least one"):
        sc.measure.time_in_turns({})


def test_a_model_with_far_more_work_is_slower_and_modes_and_threads_are_restored():
    torch.manual_seed(0)
    big, small = nn.Linear(1024, 1024), nn.Linear(1024, 8)
    big.train()
    small.eval()
    threads = torch.get_num_threads()
    ms = sc.measure.compare_latency(
        {"big": big, "small": small}, torch.randn(64, 1024), repeats=20, threads=1
    )
    assert ms["big"] > 5 * ms["small"]  # 128 times the MACs
    assert big.training and not small.training
    assert torch.get_num_threads() == threads
