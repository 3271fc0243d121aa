"""benchmarks/review.py's summary: mean ranks that do not depend on the store's order."""

from __future__ import annotations

import pytest

from tests.bench.helpers import import_benchmark


@pytest.fixture(scope="module")
def review():
    return import_benchmark("review")


def _rows(accuracies: dict[str, float], keep: float) -> list[dict]:
    metrics = dict(params=100, nonzero_params=50, macs=1000, nonzero_macs=500, flash_bytes=1,
                   peak_sram_bytes=1, wall_s=1.0)  # fmt: skip
    rows = [dict(task="t", model="m", method="control", keep=1.0, seed=0,
                 metrics=dict(metrics, accuracy=0.9))]  # fmt: skip
    for name, acc in accuracies.items():
        rows.append(dict(task="t", model="m", method=name, keep=keep, seed=0,
                         metrics=dict(metrics, accuracy=acc)))  # fmt: skip
    return rows


def test_tied_methods_share_their_places_in_any_order(review):
    accuracies = {"a": 0.8, "b": 0.7, "c": 0.7, "d": 0.6}
    forward = review.summarize(_rows(accuracies, 0.5), seeds=1)["mean_rank"]["t"]
    backward = review.summarize(_rows(dict(reversed(accuracies.items())), 0.5), seeds=1)
    assert forward == {"a": 1.0, "b": 2.5, "c": 2.5, "d": 4.0}
    assert backward["mean_rank"]["t"] == forward
