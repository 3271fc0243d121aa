import copy

import numpy as np
import pytest
import torch

import secateurs as sc
from secateurs.search import Budget, BudgetError, Space


def test_fractions_resolve_against_the_unpruned_model_and_ints_are_absolute(trained_lenet, digits):
    space = Space(trained_lenet, digits.example_inputs(), Budget(macs=0.5, flash_bytes=20_000))
    prof = sc.measure.profile(
        trained_lenet, digits.example_inputs(), weight_bits=8, activation_bits=8, latency=False
    )
    assert space.limits == {"macs": 0.5 * prof.macs, "flash_bytes": 20_000.0}
    assert space.reference.sram_bytes == prof.peak_sram_bytes


@pytest.mark.parametrize(
    "bad", [{"macs": 0}, {"macs": -0.5}, {"params": "half"}, {"sram_bytes": True}, {}]
)
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="Budget"):
        Budget(**bad)


def test_shares_and_amounts_are_explicit():
    assert Budget(macs="50%").macs == 0.5 and Budget(macs="200_000").macs == 200_000
    b = Budget(flash_bytes="64KiB", sram_bytes="25%")
    assert (b.flash_bytes, b.sram_bytes) == (65536, 0.25)
    assert Budget(macs=1.0).macs == 1.0 and Budget(flash_bytes=1).flash_bytes == 1
    for bad, message in (
        ({"macs": 2.0}, r"share of the unpruned model and must be at most 1; give an int \(2\)"),
        ({"flash_bytes": 65536.0}, r"give an int \(65536\)"),
        ({"macs": "150%"}, r"percentage must be in \(0, 100\]"),
        ({"macs": "64KiB"}, "or a percentage"),
        ({"latency_ms": "2ms"}, "positive milliseconds"),
    ):
        with pytest.raises(ValueError, match=message):
            Budget(**bad)


def test_for_target_takes_the_device_memory():
    b = Budget.for_target("cortex-m0plus")
    assert (b.flash_bytes, b.sram_bytes) == (256 * 1024, 32 * 1024) and b.weight_bits == 8


def test_an_impossible_budget_fails_at_once_with_the_smallest_reachable_value(
    trained_lenet, digits
):
    with pytest.raises(BudgetError, match=r"macs <= 100 \(the smallest reachable is [\d,]+\)"):
        sc.search.uniform(copy.deepcopy(trained_lenet), digits, Budget(macs=100))
    smallest = Space(trained_lenet, digits.example_inputs(), Budget(macs=1.0))
    macs = smallest.costs(smallest.minimum).macs
    with pytest.raises(BudgetError, match=f"smallest reachable is {int(macs):,}"):
        sc.search.abc(copy.deepcopy(trained_lenet), digits, Budget(macs=int(macs) - 1))


def test_unstructured_sparsity_cannot_meet_an_sram_budget(trained_lenet, digits):
    with pytest.raises(BudgetError, match="does not lower sram_bytes"):
        sc.search.admm(
            copy.deepcopy(trained_lenet), digits, Budget(sram_bytes=0.5), structured=False
        )


def test_space_costs_are_measured_on_the_pruned_model(trained_lenet, digits):
    x = digits.example_inputs()
    space = Space(trained_lenet, x, Budget(macs=0.5))
    structure = np.array([3, 8, 60, 42])
    pruned = copy.deepcopy(trained_lenet)
    report = space.apply(pruned, structure)
    assert report.macs_after == space.costs(structure).macs
    assert space.keep(structure) == dict(zip(space.names, structure.tolist()))
    assert [m.out_channels for m in (pruned[0], pruned[3])] == [3, 8]
    shrunk = space.shrink(space.channels)
    assert space.fits(shrunk) and not space.fits(np.minimum(shrunk + 2, space.channels))
    assert space.fits(space.grow(space.minimum))


def test_channels_keep_counts_and_names_unknown_groups(trained_lenet, digits):
    model = copy.deepcopy(trained_lenet)
    x = digits.example_inputs()
    sc.prune.channels(model, x, keep={"0": 4, "7": 30})
    assert model[0].out_channels == 4 and model[7].out_features == 30
    assert model[3].out_channels == 16
    with pytest.raises(ValueError, match=r"keep names \['conv9'\]"):
        sc.prune.channels(copy.deepcopy(trained_lenet), x, keep={"conv9": 3})
    with pytest.raises(ValueError, match="has 6 channels"):
        sc.prune.channels(copy.deepcopy(trained_lenet), x, keep={"0": 7})


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet8", "ghostnet"])
def test_closed_gates_compute_exactly_what_the_pruned_model_does(name, digits):
    model = sc.models.create(name, digits, width=0.5, seed=0).eval()
    space = Space(model, digits.example_inputs(), Budget(macs=1.0))
    rng = np.random.default_rng(0)
    structure = space.random(rng)
    x = digits.test.tensors[0][:8]
    gates = [(torch.arange(c) < k).float() for c, k in zip(space.channels, structure)]
    with sc.search.GroupGates(space.graph, space.groups, lambda: gates):
        gated = model(x)
    pruned = copy.deepcopy(model)
    sc.graph.replay(pruned, space.graph.keep_indices(space.plan(structure)))
    assert torch.allclose(gated, pruned(x), atol=1e-5)
