import numpy as np
import pytest
import torch

import secateurs as sc
from secateurs.graph import DependencyGraph
from secateurs.prune.importance import IMPORTANCE


def _cnn(task, seed=0):
    return sc.models.create("lenet5", task, seed=seed)


def _train(task, losses, epochs=8, seed=0, model=None):
    model = model or _cnn(task, seed)
    sc.fit(model, task, epochs=epochs, lr=3e-3, losses=losses, progress=False, seed=seed)
    return model


def _weights(model):
    return torch.cat(
        [
            m.weight.detach().flatten()
            for m in model.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        ]
    )


@pytest.fixture(scope="module")
def plain(digits):
    return _train(digits, [])


@pytest.mark.parametrize(
    "term",
    [sc.prune.L1(3e-5), sc.prune.ElasticNet(1e-4, l1_ratio=0.9), sc.prune.SmoothL12(5e-5)],
    ids=["l1", "elastic_net", "smooth_l12"],
)
def test_sparsity_regularizers_drive_weights_to_zero(digits, plain, term):
    model = _train(digits, [term])
    small = lambda m: float((_weights(m).abs() < 1e-2).float().mean())  # noqa: E731
    assert small(model) > 4 * small(plain)  # most weights near zero, against 9% without
    assert sc.evaluate(model, digits) > 0.8


def test_l2_shrinks_the_weight_norm(digits, plain):
    model = _train(digits, [sc.prune.L2(5e-4)])
    assert _weights(model).norm() < 0.8 * _weights(plain).norm()
    assert sc.evaluate(model, digits) > 0.8


def test_bn_target_penalizes_batchnorm_scales(digits):
    def gammas(losses):
        model = sc.models.create("resnet8", digits, seed=0)
        sc.fit(model, digits, epochs=3, lr=1e-2, losses=losses, progress=False)
        bns = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        return torch.cat(bns).abs()

    slim, plain = gammas([sc.prune.L1(1e-2, target="bn")]), gammas([])
    assert slim.mean() < 0.8 * plain.mean()  # Adam moves each scale by at most lr a step


def test_smooth_l12_matches_its_formula():
    term = sc.prune.SmoothL12(weight=1.0, a=0.1)
    w = torch.tensor([0.0, 0.05, 0.1, 0.4, -0.9])
    a = 0.1
    smooth = lambda v: np.sqrt(-(v**4) / (8 * a**3) + 3 * v**2 / (4 * a) + 3 * a / 8)  # noqa: E731
    expected = smooth(0.0) + smooth(0.05) + np.sqrt(0.1) + np.sqrt(0.4) + np.sqrt(0.9)
    assert float(term.penalty(w)) == pytest.approx(expected, rel=1e-6)
    # continuous at |w| = a
    assert smooth(a) == pytest.approx(np.sqrt(a))


def _channel_norms(model, x):
    graph = DependencyGraph(model.eval(), x)
    return np.concatenate([IMPORTANCE.get("l2")(graph, g) for g in graph.groups()])


def test_group_lasso_zeroes_whole_channels_then_threshold_removes_them(digits):
    x = digits.example_inputs()
    plain = _train(digits, [])
    lasso = _train(digits, [sc.prune.GroupLasso(x, weight=1e-3)])
    dead = lambda m: int((_channel_norms(m, x) < 0.05).sum())  # noqa: E731
    dead_channels = dead(lasso)
    assert dead_channels >= 20 and dead(plain) == 0
    accuracy = sc.evaluate(lasso, digits)
    report = sc.prune.channels(lasso, x, importance="l2", threshold=0.05)
    assert sum(len(g.removed) for g in report.groups) == dead_channels
    assert report.macs_after < report.macs_before
    assert sc.evaluate(lasso, digits) >= accuracy - 0.02  # the removed channels were ~zero


def test_linear_representability_makes_channels_explainable(digits):
    def unexplained(model):
        term = sc.prune.LinearRepresentability(["0"])
        out = {}
        h = model[0].register_forward_hook(lambda m, a, o: out.__setitem__("x", o))
        with torch.no_grad():
            model.eval()(digits.example_inputs(256))
        h.remove()
        return float(term.unexplained(out["x"]))

    base = _train(digits, [], epochs=3)
    pushed = _train(digits, [sc.prune.LinearRepresentability(["0"], weight=1.0)], epochs=3)
    assert unexplained(pushed) < 0.5 * unexplained(base)
