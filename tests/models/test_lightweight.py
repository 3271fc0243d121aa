"""MobileNet V3, EfficientNet (and EfficientNet-Lite), Xception, the residual ShuffleNet
and the MASR classifier through what every zoo model goes
through beyond the zoo-wide tests: training to a threshold, int8 close to float, every
pruning criterion exact, unstructured sparsity at the asked level, and the emulated
Cortex-M build bit for bit."""

from __future__ import annotations

import pytest
import torch

import secateurs as sc
from secateurs.deploy import cortex_m
from secateurs.graph import DependencyGraph
from secateurs.prune.importance import IMPORTANCE
from tests.graph.helpers import randomize_norms

SMALL = {
    "mobilenet_v3": ("mobilenet_v3", {"width": 0.5, "last_channels": 128, "dropout": 0.0}),
    "efficientnet": ("efficientnet", {"width": 0.25, "depth": 0.34, "last_channels": 128}),
    "efficientnet_lite": (
        "efficientnet",
        {"lite": True, "width": 0.25, "depth": 0.34, "last_channels": 128},
    ),
    "xception": ("xception", {"width": 0.0625, "middle_blocks": 1}),
    "shufflenet_residual": ("shufflenet_residual", {"width": 0.5, "stage_repeats": (2, 2, 2)}),
    "masr_classifier": ("masr_classifier", {}),
}
_TRAINED: dict = {}
# float test accuracy each reaches in 10 epochs; MobileNet V3 at this size lands anywhere in
# 0.92-0.95 with the seed and the CPU's float rounding (measured over seeds 0-2)
FLOOR = {"mobilenet_v3": 0.90}


def _trained(key, digits):
    if key not in _TRAINED:
        name, kwargs = SMALL[key]
        model = sc.models.create(name, digits, seed=0, **kwargs)
        history = sc.fit(model, digits, epochs=10, lr=3e-3, seed=0, progress=False)
        _TRAINED[key] = model, history
    return _TRAINED[key]


@pytest.mark.slow
@pytest.mark.parametrize("key", list(SMALL))
def test_trains_on_digits_and_quantizes_within_a_point(key, digits):
    model, history = _trained(key, digits)
    assert history.train_loss[-1] < history.train_loss[0] / 10
    accuracy = sc.evaluate(model, digits)
    assert accuracy >= FLOOR.get(key, 0.93)
    assert sc.evaluate(sc.quant.quantize(model, digits), digits) >= accuracy - 0.01


@pytest.mark.slow
@pytest.mark.skipif(bool(cortex_m.toolchain_missing()), reason="needs the Cortex-M toolchain")
@pytest.mark.parametrize("key", list(SMALL))
def test_runs_bit_for_bit_on_the_emulated_cortex_m4(key, digits, tmp_path):
    model, _ = _trained(key, digits)
    q = sc.quant.quantize(model, digits)
    sc.deploy.export_c(q, tmp_path)
    result = sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:8], target="cortex-m4")
    assert result.bit_exact, f"{result.mismatches} values differ"


@pytest.mark.parametrize("key", list(SMALL))
def test_every_criterion_prunes_exactly(key, digits):
    name, kwargs = SMALL[key]
    x = digits.example_inputs(4)
    for importance in IMPORTANCE.names():
        model = sc.models.create(name, digits, seed=0, **kwargs).eval()
        randomize_norms(model)
        graph = DependencyGraph(model, x)
        plan = sc.prune.plan(graph, 0.4, importance=importance, data=digits)
        assert plan, importance
        graph.zero(plan)
        with torch.no_grad():
            expected = model(x)
        graph.prune(plan)
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-4), importance


@pytest.mark.parametrize("key", list(SMALL))
def test_sparsity_reaches_the_asked_level(key, digits):
    name, kwargs = SMALL[key]
    model = sc.models.create(name, digits, seed=0, **kwargs)
    report = sc.prune.sparsify(model, sparsity=0.6)
    assert report.sparsity == pytest.approx(0.6, abs=0.01)
