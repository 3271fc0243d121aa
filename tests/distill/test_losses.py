"""Distillation losses against hand-computed values and their invariances."""

from __future__ import annotations

import math

import pytest
import torch

import secateurs as sc
from secateurs.distill import attention_map, kd_loss, rkd_angle, rkd_distance


def test_kd_loss_equals_hand_computed_value():
    student = torch.tensor([[1.0, 2.0, 0.0]])
    teacher = torch.tensor([[3.0, 0.0, 1.0]])
    t = 2.0
    softmax = lambda z: [math.exp(v / t) / sum(math.exp(u / t) for u in z) for v in z]  # noqa: E731
    p_s, p_t = softmax([1.0, 2.0, 0.0]), softmax([3.0, 0.0, 1.0])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    assert float(kd_loss(student, teacher, t)) == pytest.approx(t * t * kl, rel=1e-6)
    assert float(kd_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)


def test_kd_term_returns_weighted_kl_and_reweights_cross_entropy():
    term = sc.distill.KD(alpha=0.3, temperature=2.0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    step = sc.Step(None, None, None, s, t, 1, 0)
    assert float(term(step)) == pytest.approx(0.7 * float(kd_loss(s, t, 2.0)), rel=1e-6)
    assert term.task_weight == 0.3


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_kd_alpha_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="alpha"):
        sc.distill.KD(alpha=bad)


def test_rkd_losses_are_zero_for_identical_embeddings():
    e = torch.randn(16, 8)
    assert float(rkd_distance(e, e.clone())) == 0.0
    assert float(rkd_angle(e, e.clone())) == pytest.approx(0.0, abs=1e-7)


def test_rkd_distance_is_invariant_to_scale_and_width():
    torch.manual_seed(0)
    s, t = torch.randn(12, 6), torch.randn(12, 10)
    base = float(rkd_distance(s, t))
    assert base > 0.01
    assert float(rkd_distance(7.5 * s, t)) == pytest.approx(base, rel=1e-5)
    assert float(rkd_distance(s, 0.01 * t)) == pytest.approx(base, rel=1e-5)
    # a rotation (here a permutation of coordinates) keeps distances: loss stays zero
    assert float(rkd_distance(s[:, torch.randperm(6)], s)) == pytest.approx(0.0, abs=1e-6)


def test_rkd_angle_is_invariant_to_scale_and_translation():
    torch.manual_seed(1)
    s, t = torch.randn(10, 5), torch.randn(10, 5)
    base = float(rkd_angle(s, t))
    assert base > 0.01
    assert float(rkd_angle(3.0 * s + 2.0, t)) == pytest.approx(base, rel=1e-4)


def test_attention_map_is_normalized_channel_mean_of_squares():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x[0, 1] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # channel mean of squares: [[1, 0], [0, 2]], then L2-normalized
    expected = torch.tensor([1.0, 0.0, 0.0, 2.0]) / math.sqrt(5.0)
    assert torch.allclose(attention_map(x)[0], expected)


def test_coordinate_attention_starts_near_identity_in_1d_and_2d():
    torch.manual_seed(0)
    for shape in [(3, 16, 5, 7), (3, 16, 11)]:
        ca = sc.distill.CoordinateAttention(16).eval()
        x = torch.randn(shape)
        y = ca(x)
        assert y.shape == x.shape
        gate = torch.sigmoid(torch.tensor(3.0)) ** 2
        assert torch.allclose(y, gate * x, atol=1e-6)


def test_coordinate_attention_gates_rows_and_columns_separately():
    torch.manual_seed(0)
    ca = sc.distill.CoordinateAttention(8, reduction=1)
    for gate in (ca.gate_h, ca.gate_w):
        torch.nn.init.normal_(gate.weight)
    ca.eval()
    x = torch.rand(1, 8, 4, 6) + 0.5
    ratio = ca(x) / x  # a_h[c, i] * a_w[c, j]: rank one per channel
    for c in range(8):
        assert torch.linalg.matrix_rank(ratio[0, c].double(), rtol=1e-5) == 1
