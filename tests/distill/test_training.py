"""Distillation inside sc.fit: teachers stay untouched, layers map, students learn."""

from __future__ import annotations

import copy

import pytest
import torch

import secateurs as sc


def _pruned(teacher, task, macs=0.3):
    student = copy.deepcopy(teacher)
    sc.prune.channels(student, task.example_inputs(), target_macs=macs, importance="l2")
    return student


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_no_gradient_reaches_the_teacher(trained_resnet8, digits):
    teacher = copy.deepcopy(trained_resnet8).train()  # even a teacher left in train mode
    before = _state(teacher)
    student = _pruned(teacher, digits)
    terms = [sc.distill.KD(), sc.distill.RKD(), sc.distill.FeatureKD(), sc.distill.AttentionKD()]
    sc.fit(student, digits, epochs=1, teacher=teacher, losses=terms, progress=False)
    assert all(p.grad is None for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert teacher.training  # its mode is restored


def test_pruned_student_maps_its_layers_to_the_teacher_by_path(trained_resnet8, digits):
    student = _pruned(trained_resnet8, digits)
    term = sc.distill.FeatureKD()
    history = sc.fit(
        student, digits, epochs=2, teacher=trained_resnet8, losses=[term], progress=False
    )
    assert term.pairs == [("stack3", "stack3")]
    adapter = term.adapters["stack3"]
    t_out = sc.distill.taps.probe(trained_resnet8, digits.example_inputs(), ["stack3"], "t")
    s_out = sc.distill.taps.probe(student, digits.example_inputs(), ["stack3"], "s")
    assert s_out["stack3"][1] < t_out["stack3"][1]  # pruning thinned it
    assert tuple(adapter.weight.shape[:2]) == (t_out["stack3"][1], s_out["stack3"][1])
    losses = history["loss/feature_kd"]
    assert losses[-1] < losses[0]
    auto = sc.distill.AttentionKD()
    sc.fit(student, digits, epochs=0, teacher=trained_resnet8, losses=[auto], progress=False)
    assert auto.pairs == [(p, p) for p in ("stack1", "stack2", "stack3")]


def test_block_outputs_are_the_weighted_top_level_feature_maps(digits, mnist1d):
    resnet = sc.models.create("resnet8", digits, seed=0)
    assert sc.distill.block_outputs(resnet, digits) == ["stem", "stack1", "stack2", "stack3"]
    assert sc.distill.stage_outputs(resnet, digits) == ["stack1", "stack2", "stack3"]
    ds_cnn = sc.models.create("ds_cnn", mnist1d, seed=0)
    assert hasattr(ds_cnn, "pad")  # an input padding: a feature map, but nothing to learn
    assert sc.distill.block_outputs(ds_cnn, mnist1d) == [
        "stem",
        *(f"block{i}" for i in range(1, 5)),
    ]


def test_layerwise_distillation_hints_every_block_of_a_pruned_student(trained_resnet8, digits):
    student = _pruned(trained_resnet8, digits)
    pruned_acc = sc.evaluate(student, digits)
    teacher, (term,) = sc.distill.METHODS.get("layerwise")(
        trained_resnet8, digits, sc.distill.flow.Options()
    )
    assert teacher is trained_resnet8 and isinstance(term, sc.distill.FeatureKD)
    history = sc.fit(
        student, digits, epochs=3, lr=2e-3, teacher=teacher, losses=[term], progress=False
    )
    blocks = ["stem", "stack1", "stack2", "stack3"]
    assert term.pairs == [(b, b) for b in blocks]
    x = digits.example_inputs()
    s_shapes = sc.distill.taps.probe(student, x, blocks, "s")
    t_shapes = sc.distill.taps.probe(trained_resnet8, x, blocks, "t")
    thinned = {b for b in blocks if s_shapes[b][1] < t_shapes[b][1]}
    assert thinned and {k.replace("/", ".") for k in term.adapters} == thinned
    losses = history["loss/feature_kd"]
    assert losses[-1] < 0.7 * losses[0]
    teacher_acc = sc.evaluate(trained_resnet8, digits)
    assert sc.evaluate(student, digits) > pruned_acc + 0.5 * (teacher_acc - pruned_acc)


def test_a_layer_mismatch_fails_naming_the_layers(trained_resnet8, digits):
    student = _pruned(trained_resnet8, digits)

    def fit(term):
        sc.fit(student, digits, epochs=1, teacher=trained_resnet8, losses=[term], progress=False)

    with pytest.raises(ValueError, match="student has no module \\['stack9'\\]"):
        fit(sc.distill.FeatureKD(["stack9"]))
    with pytest.raises(ValueError, match="teacher has no module \\['stak3'\\]"):
        fit(sc.distill.FeatureKD({"stack3": "stak3"}))
    with pytest.raises(ValueError, match=r"'stack1'.*'stack3'.*same spatial size"):
        fit(sc.distill.FeatureKD({"stack1": "stack3"}))
    with pytest.raises(ValueError, match=r"'head.fc'.*feature maps"):
        fit(sc.distill.AttentionKD(["head.fc"]))
    with pytest.raises(ValueError, match="KD needs a teacher"):
        sc.fit(student, digits, epochs=1, losses=[sc.distill.KD()], progress=False)
    with pytest.raises(ValueError, match="losses\\[0\\] and losses\\[1\\] both reweight"):
        fit_two = [sc.distill.KD(alpha=0.2), sc.distill.KD(alpha=0.4)]
        sc.fit(student, digits, epochs=1, teacher=trained_resnet8, losses=fit_two, progress=False)


def test_kd_alone_teaches_a_student_without_labels(trained_resnet8, digits):
    """alpha = 0 drops the labels: whatever the student learns comes from the teacher."""
    student = sc.models.create("mlp", digits, seed=0)
    sc.fit(
        student,
        digits,
        epochs=8,
        lr=3e-3,
        teacher=trained_resnet8,
        losses=[sc.distill.KD(alpha=0.0, temperature=2.0)],
        progress=False,
    )
    x, _ = digits.test.tensors
    with torch.no_grad():
        agree = (student(x).argmax(1) == trained_resnet8(x).argmax(1)).float().mean()
    assert float(agree) > 0.85
    assert sc.evaluate(student, digits) > 0.8


def test_rkd_alone_shapes_the_embedding_like_the_teachers(trained_resnet8, digits):
    student = sc.models.create("mlp", digits, seed=0)
    term = sc.distill.RKD()
    history = sc.fit(
        student, digits, epochs=4, lr=3e-3, teacher=trained_resnet8, losses=[term], progress=False
    )
    rkd = history["loss/rkd"]
    assert rkd[-1] < 0.6 * rkd[0]


def test_distillation_recovers_a_pruned_student(trained_resnet8, digits):
    teacher_acc = sc.evaluate(trained_resnet8, digits)
    student = _pruned(trained_resnet8, digits)
    pruned_acc = sc.evaluate(student, digits)
    sc.distill.distill(
        student, trained_resnet8, digits, method="kd", epochs=3, lr=2e-3, progress=False
    )
    recovered = sc.evaluate(student, digits)
    assert recovered > pruned_acc + 0.5 * (teacher_acc - pruned_acc)
    assert recovered > 0.8


def test_qat_with_a_float_teacher(trained_resnet8, digits):
    qat = sc.quant.prepare_qat(copy.deepcopy(trained_resnet8), digits)
    sc.fit(
        qat,
        digits,
        epochs=1,
        lr=5e-4,
        teacher=trained_resnet8,
        losses=[sc.distill.KD()],
        progress=False,
    )
    qmodel = sc.quant.convert(qat)
    assert sc.evaluate(qmodel, digits) > sc.evaluate(trained_resnet8, digits) - 0.03


def test_enhance_teacher_inserts_coordinate_attention_and_keeps_the_original(
    trained_resnet8, digits
):
    before = _state(trained_resnet8)
    enhanced = sc.distill.enhance_teacher(trained_resnet8, digits, epochs=1, lr=5e-4)
    assert isinstance(enhanced.stack3[1], sc.distill.CoordinateAttention)
    assert all(torch.equal(v, trained_resnet8.state_dict()[k]) for k, v in before.items())
    assert sc.evaluate(enhanced, digits) > sc.evaluate(trained_resnet8, digits) - 0.03
    student = _pruned(trained_resnet8, digits)
    history = sc.distill.distill(
        student, trained_resnet8, digits, method="ca_kd", epochs=1, progress=False
    )
    assert history["loss/feature_kd"] and history["loss/kd"]


def test_unknown_method_lists_the_known_ones(trained_resnet8, digits):
    with pytest.raises(ValueError, match=r"unknown distillation method 'fitnet'.*'?kd"):
        sc.distill.distill(copy.deepcopy(trained_resnet8), trained_resnet8, digits, method="fitnet")
    assert {"finetune", "kd", "rkd", "feature", "layerwise", "attention", "ca_kd"} <= set(
        sc.distill.METHODS.names()
    )


def test_the_prune_recover_loop_distills_while_recovering(trained_resnet8, digits):
    student = copy.deepcopy(trained_resnet8)
    term = sc.distill.KD(alpha=0.0)  # recovery from the teacher's soft labels alone
    report = sc.prune.iterative(
        student,
        digits,
        importance="l2",
        target_macs=0.4,
        steps=2,
        finetune_epochs=1,
        lr=2e-3,
        teacher=trained_resnet8,
        losses=[term],
    )
    assert report.final.macs_kept < 0.45
    assert report.final.test_accuracy > 0.85
