import pytest

import secateurs as sc


@pytest.fixture(scope="module")
def trained(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    sc.fit(model, digits, epochs=12, lr=3e-3, progress=False)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["linear", "agp"])
def test_loop_reaches_the_target_and_records_the_trajectory(digits, trained, schedule):
    import copy

    model = copy.deepcopy(trained)
    report = sc.prune.iterative(
        model, digits, target_macs=0.4, steps=3, finetune_epochs=3, schedule=schedule, lr=2e-3
    )
    assert [s.step for s in report.steps] == [0, 1, 2, 3] and not report.stopped
    kept = [s.macs_kept for s in report.steps]
    assert kept[0] == 1.0 and kept == sorted(kept, reverse=True)
    assert abs(kept[-1] - 0.4) <= 0.03
    if schedule == "agp":  # cubic: most of the pruning happens in the first step
        assert 1 - kept[1] > 0.5 * (1 - kept[-1])
    assert (
        report.final.macs == sc.measure.profile(model, digits.example_inputs(), latency=False).macs
    )
    assert report.final.test_accuracy > 0.85


def test_loop_stops_before_crossing_the_accuracy_floor(digits, trained):
    import copy

    model = copy.deepcopy(trained)
    trained_accuracy = sc.evaluate(trained, digits, split="val")
    floor = trained_accuracy - 0.01
    report = sc.prune.iterative(
        model, digits, target_macs=0.05, steps=4, finetune_epochs=0, min_accuracy=floor
    )
    assert "below min_accuracy" in report.stopped and "kept the model of step" in report.stopped
    assert all(s.val_accuracy >= floor for s in report.steps)
    # the model is the last recorded one, not the step that fell below the floor
    assert sc.evaluate(model, digits, split="val") == pytest.approx(report.final.val_accuracy)
    prof = sc.measure.profile(model, digits.example_inputs(), latency=False)
    assert prof.macs == report.final.macs and trained_accuracy > 0.9


def test_loop_validates_its_arguments(digits, trained):
    with pytest.raises(ValueError, match="schedule must be one of 'linear', 'agp'"):
        sc.prune.iterative(trained, digits, schedule="cubic")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sc.prune.iterative(trained, digits, steps=0)
