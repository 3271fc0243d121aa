"""Each criterion ranks a planted redundant channel lowest."""

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.graph import DependencyGraph
from secateurs.prune.importance import IMPORTANCE
from tests.conftest import synthetic_task


class Net(nn.Module):
    """conv(3->6) [BatchNorm] ReLU, conv(6->4), pooled linear head; channel scores are read
    from the first group (the 6 channels)."""

    def __init__(self, bn: bool = False, relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.act = nn.ReLU() if relu else nn.Identity()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.conv2(self.act(self.bn(self.conv1(x)))).mean((2, 3)))


def _task(seed=0):
    return synthetic_task((3, 6, 6), num_classes=3, n=48, seed=seed)


def _scores(model, name, task):
    graph = DependencyGraph(model.eval(), task.example_inputs())
    group = graph.groups()[0]
    assert {m.module for m in group.members} >= {"conv1", "conv2"}
    return IMPORTANCE.get(name)(graph, group, data=task, seed=0)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return Net(**kw)


@pytest.mark.parametrize(
    "name", ["l1", "l2", "group_l1", "group_l2", "taylor", "grad_magnitude", "bn_scale"]
)
def test_a_dead_channel_ranks_lowest(name):
    model = _model(bn=name == "bn_scale")
    with torch.no_grad():
        model.conv1.weight[2] = 0  # zero filter ...
        model.conv2.weight[:, 2] = 0  # ... that nothing reads: no gradient either
        if name == "bn_scale":
            model.conv1.weight[2] = torch.randn_like(model.conv1.weight[2])
            model.bn.weight[2] = 0  # slimming: a zero BatchNorm scale
    scores = _scores(model, name, _task())
    assert int(np.argmin(scores)) == 2 and np.sum(scores == scores.min()) == 1


@pytest.mark.parametrize("p", [1, 2])
def test_group_norms_count_every_coupled_weight_once(p):
    """conv1's filter, its BatchNorm scale and conv2's input slice; a depthwise convolution
    in between is counted once, though both its axes are in the group."""
    torch.manual_seed(0)
    plain = _model(bn=True)
    depthwise = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3, groups=6), nn.Conv2d(6, 4, 1), nn.Flatten()
    )
    x = _task().example_inputs()
    for model, tied in (
        (plain, [plain.conv1.weight, plain.bn.weight, plain.conv2.weight.transpose(0, 1)]),
        (
            depthwise,
            [
                depthwise[0].weight,
                depthwise[0].bias,
                depthwise[1].weight,
                depthwise[1].bias,
                depthwise[2].weight.transpose(0, 1),
            ],
        ),
    ):
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
        graph = DependencyGraph(model.eval(), x)
        group = graph.groups()[0]
        expected = sum(t.detach().abs().pow(p).reshape(6, -1).sum(1) for t in tied) ** (1 / p)
        scores = IMPORTANCE.get(f"group_l{p}")(graph, group)
        np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-6)


def test_group_norms_see_a_channel_that_nothing_reads():
    """Filter norms rank a channel by what produces it; group norms also by what reads it."""
    model = _model()
    with torch.no_grad():
        w = model.conv1.weight
        strongest = int(w.abs().sum((1, 2, 3)).argmax())
        w[2] = w[strongest] * 1.01  # the largest filter ...
        model.conv2.weight[:, 2] = 0  # ... that the next layer ignores
    assert int(np.argmax(_scores(model, "l1", _task()))) == 2
    for name in ("group_l1", "group_l2"):
        assert int(np.argmin(_scores(model, name, _task()))) == 2


def test_fpgm_ranks_the_filter_at_the_median_lowest():
    model = _model()
    with torch.no_grad():
        w = model.conv1.weight
        w[4] = (w[0] + w[1] + w[2] + w[3] + w[5]) / 5  # the centre of the others
    assert int(np.argmin(_scores(model, "fpgm", _task()))) == 4


def test_hsic_ranks_one_of_a_duplicated_pair_lowest():
    model = _model()
    with torch.no_grad():
        model.conv1.weight[5] = model.conv1.weight[1]
    scores = _scores(model, "hsic", _task())
    assert int(np.argmin(scores)) in (1, 5)
    assert scores[1] != scores[5]  # only one of the two goes


@pytest.mark.parametrize("name", ["hsic", "linear_redundancy"])
def test_a_linear_combination_of_two_channels_ranks_lowest(name):
    scores = _scores(_mixed_model(), name, _task())
    assert int(np.argmin(scores)) in (0, 1, 3)  # each of the three is a mix of the others
    if name == "linear_redundancy":
        assert np.sort(scores)[1] > scores.min()


def _mixed_model():
    """No activation between the convolutions; channel 3 = 0.5·channel 0 + 2·channel 1."""
    model = _model(relu=False).eval()
    with torch.no_grad():
        w = model.conv1.weight
        w[3] = 0.5 * w[0] + 2.0 * w[1]
    return model


def test_linear_redundancy_compensation_keeps_outputs():
    task = _task()
    model = _mixed_model()
    x = task.example_inputs(8)
    with torch.no_grad():
        before = model(x)
    report = sc.prune.channels(
        model, x, ratio={"conv1": 0.17}, importance="linear_redundancy", data=task
    )
    assert model.conv1.out_channels == 5 and report.groups[0].removed[0] in (0, 1, 3)
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-4)


def test_without_compensation_removing_the_same_channel_changes_outputs():
    task = _task()
    model = _mixed_model()
    x = task.example_inputs(8)
    with torch.no_grad():
        before = model(x)
    graph = DependencyGraph(model, x)
    graph.prune({graph.groups()[0]: [3]})
    with torch.no_grad():
        assert (model(x) - before).abs().max() > 1e-2


def test_per_layer_ratios_prune_only_the_named_layers(digits):
    model = sc.models.create("resnet8", digits, seed=0).eval()
    report = sc.prune.channels(model, digits.example_inputs(), ratio={"stack2.conv1.0": 0.5})
    touched = [g for g in report.groups if g.removed]
    assert len(touched) == 1 and "stack2.conv1.0:out" in touched[0].members
    assert model.stack2.conv1[0].out_channels == 16


def test_data_driven_criteria_prune_a_zoo_model(digits):
    for name in ("taylor", "grad_magnitude", "hsic", "linear_redundancy", "fpgm", "bn_scale"):
        model = sc.models.create("mobilenet_v2", digits, width=0.5, seed=0, last_channels=64)
        report = sc.prune.channels(
            model, digits.example_inputs(), ratio=0.3, importance=name, data=digits
        )
        assert report.macs_after < report.macs_before, name
        assert model(digits.example_inputs(2)).shape == (2, 10)


def test_gradient_tracking_masks_filters_that_can_come_back(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    tracking = sc.prune.GradientTracking(digits.example_inputs(), ratio=0.3)
    sc.fit(model, digits, epochs=8, lr=3e-3, callbacks=[tracking], progress=False)
    assert tracking.changes > 0  # the kept set S = G | A moved during training
    zero_filters = int((model[0].weight.detach().flatten(1).abs().sum(1) == 0).sum())
    assert 0 < zero_filters <= 1  # conv1 has 6 filters: at most int(0.3 * 6) outside S
    accuracy = sc.evaluate(model, digits)
    report = sc.prune.channels(model, digits.example_inputs(), ratio=0.3)
    assert accuracy > 0.85 and model[0].out_channels == 5
    assert sc.evaluate(model, digits) > accuracy - 0.1 and report.macs_kept < 0.75


def test_soft_filter_pruning_lets_filters_come_back(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    sfp = sc.prune.SoftFilterPruning(digits.example_inputs(), ratio=0.3)
    sc.fit(model, digits, epochs=6, lr=3e-3, callbacks=[sfp], progress=False)
    assert len(sfp.history) == 6
    first = [set(epoch.get(0, ())) for epoch in sfp.history]  # conv1's group
    assert all(len(s) == 1 for s in first)  # int(0.3 * 6) filters zeroed each epoch
    # zeroed filters keep their gradients: by the next epoch's end they have grown back
    assert len(sfp.regrowth) == 5 and sfp.regrowth[0] > 0.01 and min(sfp.regrowth) > 0
    zero = int((model[0].weight.detach().flatten(1).abs().sum(1) == 0).sum())
    assert zero == 1
    accuracy = sc.evaluate(model, digits)
    sc.prune.channels(model, digits.example_inputs(), ratio=0.3)
    # the zeroed filters were already out of play: removing them changes little
    assert accuracy > 0.8 and abs(sc.evaluate(model, digits) - accuracy) < 0.02
