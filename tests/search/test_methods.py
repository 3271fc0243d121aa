import copy

import numpy as np
import pytest
import torch

import secateurs as sc
from secateurs.search import Budget, Space
from secateurs.search.admm_search import _Augmented, _StructuredProjection
from secateurs.search.metapruning_search import PruningNet
from secateurs.search.sensitivity import overshoot_removed

FAST = {
    "uniform": {},
    "sensitivity": {"levels": (0.75, 0.5, 0.25)},
    "admm": {"epochs": 3},
    "abc": {"colony": 3, "cycles": 1, "steps": 5},
    "autoprune": {"epochs": 3},
    "metapruning": {"epochs": 5, "population": 4, "generations": 1, "parents": 2},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(FAST))
def test_every_search_meets_the_budget_and_is_deterministic(method, trained_lenet, digits):
    runs = []
    for _ in range(2):
        model = copy.deepcopy(trained_lenet)
        result = sc.search.METHODS[method](
            model, digits, Budget(macs=0.4), seed=3, finetune_epochs=2, lr=3e-3, **FAST[method]
        )
        prof = sc.measure.profile(model, digits.example_inputs(), latency=False)
        assert result.fits and prof.macs <= 0.4 * result.limits["macs"] / 0.4
        runs.append((result.structure, result.accuracy, prof.macs))
    assert runs[0] == runs[1]
    assert runs[0][1] > 0.7  # LeNet-5 at 40% of its MACs, two epochs of fine-tuning


def test_sensitivity_gain_counts_only_overshoot_still_left(trained_lenet, digits):
    space = Space(trained_lenet, digits.example_inputs(), Budget(macs=0.6, params=0.6))
    full, lims = space.channels, space.limits
    small = space.uniform()  # fits both limits
    after = full.copy()
    after[0] = space.minimum[0]  # the first conv: many MACs, few params
    cf, ca = space.costs(full), space.costs(after)
    assert ca.macs < lims["macs"] < cf.macs and ca.params > lims["params"]
    # the MACs overshoot is removed only down to the limit; the params one in part
    expected = (cf.macs - lims["macs"]) / lims["macs"] + (cf.params - ca.params) / lims["params"]
    assert overshoot_removed(space, full, after) == pytest.approx(expected)
    # once a limit is met, shrinking further removes nothing
    assert overshoot_removed(space, small, space.minimum) == 0.0


def test_admm_projection_keeps_exactly_the_budgeted_channels(trained_lenet, digits):
    space = Space(trained_lenet, digits.example_inputs(), Budget(macs=0.4))
    target = space.uniform()
    project = _StructuredProjection(trained_lenet, space, target)
    z = project({n: p.detach() for n, p in trained_lenet.named_parameters()})
    for name, k in zip(("0.weight", "3.weight", "7.weight", "9.weight"), target):
        alive = (z[name].flatten(1).abs().sum(1) > 0).sum().item()
        assert alive == k
    # the kept filters are the ones with the largest L2 norms across the group
    norms = trained_lenet[0].weight.detach().flatten(1).norm(dim=1)
    kept = set(torch.nonzero(z["0.weight"].flatten(1).abs().sum(1)).flatten().tolist())
    assert kept == set(torch.topk(norms, int(target[0])).indices.tolist())


def test_admm_residual_falls_during_training(trained_lenet, digits):
    model = copy.deepcopy(trained_lenet)
    result = sc.search.admm(model, digits, Budget(macs=0.4), epochs=5, finetune_epochs=0)
    residuals = [h["residual"] for h in result.history if "residual" in h]
    assert len(residuals) == 5 and residuals[-1] < residuals[0] / 2
    assert result.fits


def test_admm_augmented_term_is_zero_on_the_constraint_set(trained_lenet):
    params = dict(trained_lenet.named_parameters())
    term = _Augmented(params, rho=2.0)
    assert term(None).item() == 0.0
    term.z = {n: p.detach() + 1.0 for n, p in params.items()}
    total = sum(p.numel() for p in params.values())
    assert term(None).item() == pytest.approx(2.0 / 2 * total)


def test_unstructured_admm_meets_a_params_budget(trained_lenet, digits):
    model = copy.deepcopy(trained_lenet)
    result = sc.search.admm(
        model, digits, Budget(params=0.3), structured=False, epochs=3, finetune_epochs=2, lr=3e-3
    )
    prof = sc.measure.profile(model, digits.example_inputs(), latency=False)
    assert prof.nonzero_params <= 0.3 * prof.params and result.fits
    assert result.structure is None and result.accuracy > 0.8


def test_abc_never_proposes_a_structure_over_budget(trained_lenet, digits):
    space = Space(trained_lenet, digits.example_inputs(), Budget(macs=0.3))
    proposals = []

    class Recording(sc.search.SerialBackend):
        def map(self, fn, jobs):
            proposals.extend(job["keep"] for job in jobs)
            return super().map(fn, jobs)

    sc.search.abc(
        copy.deepcopy(trained_lenet),
        digits,
        Budget(macs=0.3),
        colony=4,
        cycles=2,
        steps=3,
        finetune_epochs=0,
        backend=Recording(),
        seed=1,
    )
    assert len(proposals) >= 8
    for keep in proposals:
        assert space.fits([keep[n] for n in space.names]), keep


def test_autoprune_restores_a_unit_planted_as_wrongly_pruned(trained_lenet, digits):
    fc = trained_lenet[7]  # 120 units; the one with the largest outgoing weights matters
    unit = int(trained_lenet[9].weight.detach().abs().sum(0).argmax())
    aux = torch.full((fc.out_features,), 0.1)
    aux[unit] = -0.2  # planted: its gate starts closed
    result = sc.search.autoprune(
        copy.deepcopy(trained_lenet),
        digits,
        Budget(macs=1.0),
        epochs=2,
        aux_lr=0.03,
        strength=0.0,
        aux_init={"7": aux},
        finetune_epochs=0,
    )
    final = result.history[-1]["aux"]["7"]
    assert final[unit] > 0  # the gradient through its closed gate reopened it
    assert result.structure["7"] == 120


def test_pruningnet_generates_weights_of_the_right_shapes(trained_lenet, digits):
    model = copy.deepcopy(trained_lenet)
    space = Space(model, digits.example_inputs(), Budget(macs=0.5))
    net = PruningNet(model, space)
    rng = np.random.default_rng(0)
    x = digits.test.tensors[0][:4]
    for _ in range(3):
        structure = space.random(rng)
        weights = net.weights(structure)
        assert {n: w.shape for n, w in weights.items()} == {
            f"{n}.weight": m.weight.shape
            for n, m in net.model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        }
        net.structure = structure
        out = net(x)
        # the gated full-size network equals the cropped one built from generated weights
        pruned = copy.deepcopy(trained_lenet)
        with torch.no_grad():
            for n, w in weights.items():
                pruned.get_submodule(n[: -len(".weight")]).weight.copy_(w)
        sc.graph.replay(pruned, space.graph.keep_indices(space.plan(structure)))
        assert torch.allclose(out, pruned(x), atol=1e-5)
    # untrained generators reproduce the trained model's weights for any width
    assert torch.equal(weights["0.weight"], trained_lenet[0].weight.detach())


def test_process_backend_matches_serial(trained_lenet, digits):
    space = Space(trained_lenet, digits.example_inputs(), Budget(macs=0.5))
    jobs = [
        {
            "model": trained_lenet,
            "task": digits,
            "keep": space.keep(s),
            "example_inputs": digits.example_inputs(),
            "steps": 3,
            "seed": 0,
        }
        for s in (space.uniform(), space.channels // 2)
    ]
    serial = sc.search.get_backend("serial").map(sc.search.evaluate_candidate, jobs)
    parallel = sc.search.ProcessBackend(workers=2).map(sc.search.evaluate_candidate, jobs)
    assert serial == parallel
    with pytest.raises(ValueError, match="unknown search backend 'gpu'"):
        sc.search.get_backend("gpu")


def test_every_search_takes_its_options_by_keyword_only():
    """(model, task, budget), then keywords: a positional option would bind silently to
    whichever parameter sits there in that search's own order."""
    import inspect

    for name, search in sc.search.METHODS.items():
        params = list(inspect.signature(search).parameters.values())
        assert [p.name for p in params[:3]] == ["model", "task", "budget"], name
        assert all(p.kind is p.KEYWORD_ONLY for p in params[3:]), name
        assert "progress" in {p.name for p in params}, name


def test_every_search_ends_with_the_shared_options_in_one_order():
    import inspect

    from secateurs.search.result import SHARED_OPTIONS

    defaults = {name: default for name, default, _ in SHARED_OPTIONS}
    for name, fn in sc.search.METHODS.items():
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:3]] == ["model", "task", "budget"], name
        shared = [p for p in params if p.name in defaults]
        names = [p.name for p in shared]
        assert {"finetune_epochs", "lr", "min_keep", "ignored", "seed", "progress"} <= set(names)
        assert params[-len(shared) :] == shared, f"{name}: its own options come first"
        assert names == [n for n in defaults if n in names], name
        assert all(p.kind == p.KEYWORD_ONLY for p in params[3:]), name
        assert all(p.default == defaults[p.name] for p in shared), name
        assert "options every search shares" in fn.__doc__ and fn.in_place


def test_the_shared_options_are_checked_before_any_work(digits):
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    for fn in sc.search.METHODS.values():
        with pytest.raises(ValueError, match="finetune_epochs must be >= 0"):
            fn(model, digits, Budget(macs=0.5), finetune_epochs=-1)
        with pytest.raises(ValueError, match="lr must be > 0"):
            fn(model, digits, Budget(macs=0.5), lr=0.0)
    with pytest.raises(ValueError, match="unknown importance 'l7'; known importances"):
        sc.search.uniform(model, digits, Budget(macs=0.5), importance="l7")
    with pytest.raises(TypeError, match=r"admm\(\) takes no option 'backend'; its options: "):
        sc.search.admm(model, digits, Budget(macs=0.5), backend=None)
