import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from tests.graph.helpers import randomize_norms
from tests.graph.models import Head, cbr


def _mobilenet(task):
    model = sc.models.create("mobilenet_v2", task, width=0.5, seed=0, last_channels=64)
    randomize_norms(model)
    return model.eval()


def test_local_ratio_removes_that_fraction_of_every_group(digits):
    model = _mobilenet(digits)
    report = sc.prune.channels(model, digits.example_inputs(), ratio=0.5)
    for g in report.groups:
        assert len(g.removed) == min(g.channels // 2, g.channels - 1) or g.channels == 1
    prof = sc.measure.profile(model, digits.example_inputs(), latency=False)
    assert (report.params_after, report.macs_after) == (prof.params, prof.macs)
    assert report.macs_after < report.macs_before and report.params_after < report.params_before
    assert "MACs" in str(report)


def test_global_ratio_removes_that_fraction_overall(digits):
    model = _mobilenet(digits)
    report = sc.prune.channels(model, digits.example_inputs(), ratio=0.4, scope="global")
    total = sum(g.channels for g in report.groups)
    removed = sum(len(g.removed) for g in report.groups)
    assert abs(removed - 0.4 * total) <= 0.02 * total
    # global ranking prunes groups unevenly
    assert len({round(len(g.removed) / g.channels, 2) for g in report.groups}) > 3


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_target_macs_is_reached_within_two_percent(digits, target):
    model = _mobilenet(digits)
    x = digits.example_inputs()
    report = sc.prune.channels(model, x, target_macs=target, scope="global")
    assert abs(report.macs_kept - target) <= 0.02
    assert sc.measure.profile(model, x, latency=False).macs == report.macs_after


def test_unreachable_target_fails_with_advice(digits):
    model = _mobilenet(digits)
    with pytest.raises(ValueError, match=r"cannot be met.*raise max_layer_ratio"):
        sc.prune.channels(model, digits.example_inputs(), target_macs=0.01, max_layer_ratio=0.3)


def test_l1_removes_the_filters_with_the_smallest_norms():
    model = nn.Sequential(cbr(3, 6), cbr(6, 4), Head(4)).eval()
    with torch.no_grad():
        norms = torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0, 2.0])
        w = model[0][0].weight
        w.copy_(w.sign() * norms.view(-1, 1, 1, 1) / w[0].numel())
    report = sc.prune.channels(model, torch.randn(1, 3, 5, 5), ratio=0.5, importance="l1")
    first = report.groups[0]
    assert first.channels == 6 and first.removed == (1, 3, 5)
    assert model[0][0].out_channels == 3


def test_random_importance_depends_on_seed(digits):
    removed = []
    for seed in (0, 0, 1):
        model = _mobilenet(digits)
        r = sc.prune.channels(
            model, digits.example_inputs(), ratio=0.5, importance="random", seed=seed
        )
        removed.append([g.removed for g in r.groups])
    assert removed[0] == removed[1] != removed[2]


def test_round_to_keeps_multiples(digits):
    model = _mobilenet(digits)
    report = sc.prune.channels(model, digits.example_inputs(), ratio=0.3, round_to=4)
    for g in report.groups:
        if g.removed:
            assert g.kept % 4 == 0


def test_max_layer_ratio_caps_every_group(digits):
    model = _mobilenet(digits)
    report = sc.prune.channels(
        model, digits.example_inputs(), ratio=0.4, scope="global", max_layer_ratio=0.5
    )
    assert all(len(g.removed) <= g.channels // 2 for g in report.groups)


def test_pruned_model_still_trains(digits):
    """Train, prune half the channels (a quarter of the MACs remain), recover by fine-tuning."""
    model = sc.models.create("lenet5", digits, seed=0)
    sc.fit(model, digits, epochs=15, lr=3e-3, progress=False)
    trained = sc.evaluate(model, digits)
    report = sc.prune.channels(model, digits.example_inputs(), ratio=0.5)
    assert report.macs_kept < 0.35
    sc.fit(model, digits, epochs=8, lr=2e-3, progress=False)
    assert trained > 0.93 and sc.evaluate(model, digits) > 0.88


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, "exactly one of ratio=, target_macs=, threshold= or keep="),
        ({"ratio": 0.5, "target_macs": 0.5}, ValueError, "exactly one of ratio"),
        ({"ratio": {"nope": 0.5}}, ValueError, r"ratio names modules \['nope'\]"),
        ({"ratio": {"stem.0": 1.5}}, ValueError, r"ratio\['stem.0'\] must be in \[0, 1\)"),
        (
            {"ratio": 0.5, "importance": "taylor"},
            ValueError,
            "needs calibration data: pass data=task",
        ),
        ({"ratio": 1.0}, ValueError, r"in \[0, 1\); got 1.0"),
        ({"ratio": -0.1}, ValueError, "ratio must be >= 0.0"),
        ({"target_macs": 1.5}, ValueError, r"in \(0, 1\]; got 1.5"),
        (
            {"ratio": 0.5, "importance": "hessian"},
            ValueError,
            "unknown importance 'hessian'; known importances: bn_scale, fpgm, grad_magnitude, "
            "group_l1, group_l2, hsic, l1, l2, linear_redundancy, random, taylor",
        ),
        ({"ratio": 0.5, "scope": "layer"}, ValueError, "scope must be one of 'local', 'global'"),
        ({"ratio": 0.5, "round_to": 0}, ValueError, "round_to must be >= 1"),
        ({"ratio": 0.5, "max_layer_ratio": 1.0}, ValueError, "max_layer_ratio must be below 1"),
    ],
)
def test_channels_validates_arguments_before_touching_the_model(digits, kwargs, error, message):
    model = _mobilenet(digits)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=message):
        sc.prune.channels(model, digits.example_inputs(), **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_norms_over_several_channels_keep_them_and_per_channel_norms_prune():
    """LayerNorm and a GroupNorm with several channels per group compute their statistics
    over those channels, so removing one would change the others: they are kept. A
    GroupNorm with one channel per group is per channel, and prunes."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.per_channel = nn.GroupNorm(16, 16)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.gn = nn.GroupNorm(4, 16)
            self.proj = nn.Linear(16, 12)
            self.ln = nn.LayerNorm(12)
            self.out = nn.Linear(12, 5)

        def forward(self, x):
            h = self.gn(self.conv2(torch.relu(self.per_channel(self.conv(x))))).mean((2, 3))
            return self.out(self.ln(self.proj(h)))

    model = Net().eval()
    sc.prune.channels(model, torch.randn(2, 3, 6, 6), ratio=0.5)
    assert (model.conv.out_channels, model.per_channel.num_groups) == (8, 8)
    assert (model.conv2.out_channels, model.gn.num_channels, model.gn.num_groups) == (16, 16, 4)
    assert model.ln.normalized_shape == (12,) and model.proj.out_features == 12
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 5)
