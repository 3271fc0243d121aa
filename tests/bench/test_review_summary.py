"""benchmarks/review.py's summary: mean ranks that do not depend on the store's order."""

from __future__ import annotations

import pytest

from tests.bench.helpers import import_benchmark


@pytest.fixture(scope="module")
def review():
    return import_benchmark("review")


def _rows(accuracies: dict[str, float], keep: float) -> list[dict]:
    metrics = {
        "params": 100,
        "nonzero_params": 50,
        "macs": 1000,
        "nonzero_macs": 500,
        "flash_bytes": 1,
        "peak_sram_bytes": 1,
        "wall_s": 1.0,
    }
    rows = [
        {
            "task": "t",
            "model": "m",
            "method": "control",
            "keep": 1.0,
            "seed": 0,
            "metrics": dict(metrics, accuracy=0.9),
        }
    ]
    for name, acc in accuracies.items():
        rows.append(
            {
                "task": "t",
                "model": "m",
                "method": name,
                "keep": keep,
                "seed": 0,
                "metrics": dict(metrics, accuracy=acc),
            }
        )
    return rows


def test_tied_methods_share_their_places_in_any_order(review):
    accuracies = {"a": 0.8, "b": 0.7, "c": 0.7, "d": 0.6}
    forward = review.summarize(_rows(accuracies, 0.5), seeds=1)["mean_rank"]["t"]
    backward = review.summarize(_rows(dict(reversed(accuracies.items())), 0.5), seeds=1)
    assert forward == {"a": 1.0, "b": 2.5, "c": 2.5, "d": 4.0}
    assert backward["mean_rank"]["t"] == forward


def _grid_rows(accuracy, tasks=("a", "b"), keeps=(0.5, 0.25), seeds=range(4)):
    return [
        {
            "task": t,
            "model": "m",
            "method": m,
            "keep": k,
            "seed": s,
            "metrics": {"accuracy": accuracy(t, m, k, s)},
        }
        for t in tasks
        for m in ("first", "second", "third")
        for k in keeps
        for s in seeds
    ]


def test_mean_ranks_give_intervals_over_seeds_and_tie_what_they_cannot_separate():
    from secateurs.bench.report import mean_ranks

    order = {"first": 0.9, "second": 0.8, "third": 0.7}
    ranks = mean_ranks(_grid_rows(lambda t, m, k, s: order[m]))
    assert set(ranks) == {"a", "b", "all"}
    assert ranks["all"] == [
        ("first", 1.0, 1.0, 1.0, 1),
        ("second", 2.0, 2.0, 2.0, 2),
        ("third", 3.0, 3.0, 3.0, 3),
    ]
    # "first" and "second" trade places from seed to seed: one tier, wide intervals
    swap = lambda t, m, k, s: {"first": 0.9 - 0.2 * (s % 2), "second": 0.8, "third": 0.5}[m]  # noqa: E731
    ranks = mean_ranks(_grid_rows(swap))["all"]
    assert [r[0] for r in ranks][-1] == "third" and ranks[-1][4] == 2
    assert ranks[0][4] == ranks[1][4] == 1 and ranks[0][2] < ranks[0][3]
    # a method missing a cell of a task is left out of that task's ranking
    rows = [
        r
        for r in _grid_rows(lambda t, m, k, s: order[m])
        if not (r["task"] == "b" and r["method"] == "third" and r["seed"] == 0)
    ]
    ranks = mean_ranks(rows)
    assert [r[0] for r in ranks["b"]] == ["first", "second"]
    assert [r[0] for r in ranks["all"]] == ["first", "second"]


def test_the_pareto_front_keeps_what_nothing_cheaper_beats():
    from secateurs.bench.report import pareto_front

    points = [(1, 50, "a"), (2, 40, "b"), (2, 60, "c"), (3, 55, "d"), (4, 70, "e")]
    assert pareto_front(points) == [(1, 50, "a"), (2, 60, "c"), (4, 70, "e")]
    assert pareto_front([]) == []


def test_one_seed_gives_mean_ranks_without_intervals_or_tiers():
    from secateurs.bench.report import _rank_table, mean_ranks

    order = {"first": 0.9, "second": 0.8, "third": 0.7}
    ranks = mean_ranks(_grid_rows(lambda t, m, k, s: order[m], seeds=[0]))
    assert [(r[0], r[1], r[4]) for r in ranks["all"]] == [
        ("first", 1.0, 0),
        ("second", 2.0, 0),
        ("third", 3.0, 0),
    ]
    assert all(r[2] != r[2] for r in ranks["all"])  # NaN: no interval
    _, rows = _rank_table(ranks)
    assert rows[0][:3] == ("first", "1.0 (one seed)", "-")
