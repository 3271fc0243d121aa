"""benchmarks/structured_methods.py: the latency fit that bounds what pruning can buy, the
floor models it is fitted on, and the seed-by-seed comparison with Torch-Pruning."""

from __future__ import annotations

import pytest

import secateurs as sc
from tests.bench.helpers import import_benchmark


@pytest.fixture(scope="module")
def bench():
    return import_benchmark("structured_methods")


def test_the_fit_recovers_the_fixed_share_of_an_affine_runtime(bench):
    fixed, per_mac = 3.0, 1.0  # ms: f = 0.75
    kept = {"parent": 1.0, "l1_0.5": 0.5, "floor_8": 0.05, "floor_16": 0.2}
    ms = {name: fixed + per_mac * k for name, k in kept.items()}
    ms["floor_16"] += 0.5  # off the fast path: it leaves less room, so it is not used
    row = bench._bound_row(ms, kept)
    assert row["floor"] == "floor_8"
    assert row["fixed_share"] == pytest.approx(0.75)
    assert row["affine_efficiency_0.5"] == pytest.approx(0.5 / (0.75 + 0.125))
    # the 0.5 prune follows the fit exactly, so its measured efficiency equals the bound
    assert row["l1_0.5_efficiency"] == pytest.approx(row["affine_efficiency_0.5"])


def test_a_runtime_without_fixed_cost_allows_the_ideal(bench):
    kept = {"parent": 1.0, "l1_0.5": 0.5, "floor_8": 0.1}
    row = bench._bound_row({name: 2.0 * k for name, k in kept.items()}, kept)
    assert row["fixed_share"] == pytest.approx(0.0, abs=1e-12)
    assert row["affine_efficiency_0.5"] == pytest.approx(1.0)


def test_the_floor_cuts_every_group_to_the_given_width(bench):
    task = sc.data.load("mnist1d", seed=0)
    parent = sc.models.create("ds_cnn", task, seed=0)
    x = task.example_inputs()
    floor = bench._floor(parent, x, 8)
    groups = sc.graph.DependencyGraph(floor, x).groups()
    assert groups and all(g.channels == 8 for g in groups)
    assert sum(p.numel() for p in floor.parameters()) < sum(p.numel() for p in parent.parameters())


def test_paired_counts_wins_and_losses_seed_by_seed(bench):
    acc = {"a": (0.9, 0.8, 0.7), "torch_pruning": (0.8, 0.8, 0.9)}
    cells = {
        f"t/{m}/0.5/{s}": {"accuracy": a} for m, accs in acc.items() for s, a in enumerate(accs)
    }
    row = bench._paired(cells, "t", "a", 0.5)
    assert row["paired_seeds"] == [0, 1, 2]
    assert (row["wins"], row["losses"]) == (1, 1)
    assert row["difference"] == pytest.approx(-1 / 30)
    assert row["standard_error"] == pytest.approx(0.15275252 / 3**0.5)


def test_each_engine_is_timed_in_turns_across_the_models(bench, monkeypatch):
    order = []

    def timer(name):
        return {"eager": lambda x: lambda: order.append((name, x)), "onnx": None}

    monkeypatch.setattr(bench, "CALLS", 2)
    ms = bench._in_turns({"parent": timer("parent"), "model": timer("model")}, "x", "eager")
    assert order[-4:] == [("parent", "x"), ("model", "x")] * 2
    assert set(ms) == {"parent", "model"}
