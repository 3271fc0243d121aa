"""Batch-norm recalibration after pruning, and the registries' bare decorator."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs._registry import Registry


@pytest.fixture(scope="module")
def mobilenet(digits):
    torch.manual_seed(0)
    model = sc.models.create(
        "mobilenet_v2",
        digits,
        seed=0,
        width=0.5,
        last_channels=128,
        cfg=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2]],
    )
    sc.fit(model, digits, epochs=4, lr=3e-3, seed=0, progress=False)
    return model


def test_recalibration_brings_a_pruned_model_back_from_chance(mobilenet, digits):
    plain, recal = copy.deepcopy(mobilenet), copy.deepcopy(mobilenet)
    x = digits.example_inputs()
    sc.prune.channels(plain, x, target_macs=0.7, importance="l1", scope="global")
    report = sc.prune.channels(
        recal, x, target_macs=0.7, importance="l1", scope="global", data=digits, recalibrate=True
    )
    assert report.macs_kept == pytest.approx(0.7, rel=0.03)
    before, after = sc.evaluate(plain, digits), sc.evaluate(recal, digits)
    # the stale statistics leave the pruned model near chance (10 classes); re-estimated,
    # it keeps a good part of what its weights know, with no weight changed
    assert before < 0.25 and after > 0.35 and after > before + 0.15
    for a, b in zip(plain.state_dict().items(), recal.state_dict().items()):
        if "running" not in a[0] and "num_batches" not in a[0]:
            assert torch.equal(a[1], b[1]), a[0]
    # the same as recalibrating by hand afterwards
    sc.prune.recalibrate_bn(plain, digits)
    assert sc.evaluate(plain, digits) == after


def test_data_turns_recalibration_on_by_default(mobilenet, digits):
    """With data (for a data-driven criterion, say) channels() re-estimates the statistics
    unless told not to; recalibrate=False keeps them, as before."""
    x = digits.example_inputs()
    default, kept, forced = (copy.deepcopy(mobilenet) for _ in range(3))
    for model, flag in ((default, None), (kept, False), (forced, True)):
        sc.prune.channels(
            model,
            x,
            target_macs=0.7,
            importance="taylor",
            scope="global",
            data=digits,
            recalibrate=flag,
        )
    assert sc.evaluate(default, digits) == sc.evaluate(forced, digits)
    assert sc.evaluate(default, digits) > sc.evaluate(kept, digits) + 0.1
    running = [k for k in default.state_dict() if "running_mean" in k]
    assert any(not torch.equal(default.state_dict()[k], kept.state_dict()[k]) for k in running)


def test_recalibration_restores_modes_momenta_and_leaves_models_without_batch_norm(digits):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4, momentum=0.3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 36, 10),
    )
    model.train()
    model[3].eval()
    assert sc.prune.recalibrate_bn(model, digits, batches=2) == 1
    assert model.training and model[1].training and not model[3].training
    assert model[1].momentum == 0.3
    assert int(model[1].num_batches_tracked) == 2  # an equal average over the 2 batches
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    state = copy.deepcopy(plain.state_dict())
    assert sc.prune.recalibrate_bn(plain, digits) == 0
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())


def test_a_failing_batch_puts_the_statistics_back(digits):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    sc.fit(nn.Sequential(model, nn.Linear(4 * 36, 10)), digits, epochs=1, progress=False)
    before = {k: v.clone() for k, v in model[1].state_dict().items()}
    good = digits.test.tensors[0][:8]
    with pytest.raises(RuntimeError):
        sc.prune.recalibrate_bn(model, [good, torch.zeros(8, 3, 8, 8)])  # 3 channels: refused
    assert all(torch.equal(v, model[1].state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="recalibrate=True re-estimates"):
        sc.prune.channels(model, good, ratio=0.5, recalibrate=True)
    with pytest.raises(ValueError, match="batches must be"):
        sc.prune.recalibrate_bn(model, digits, batches=0)


def test_registries_take_the_bare_decorator_and_the_called_one():
    registry = Registry("model")  # as sc.models.register_model, without touching the zoo

    @registry.register
    def bare(task, width=1.0):
        return nn.Linear(64, task.num_classes)

    @registry.register("called")
    def another(task, width=1.0):
        return nn.Linear(64, task.num_classes)

    assert callable(bare) and bare.__name__ == "bare"  # the builder itself, not a wrapper
    assert registry.get("bare") is bare and registry.get("called") is another
    assert registry.names() == ["bare", "called"]
    assert sc.models.register_model.__func__ is Registry.register  # the zoo's decorator
