"""Relational knowledge distillation (Park, Kim, Lu & Cho 2019, arXiv 1904.05068).

The student matches the *structure* of the teacher's embedding space rather than its
coordinates: the pairwise distances (normalized by their mean, so scale does not matter)
and the angles formed by triples, both with a Huber loss. Embeddings of different widths
compare directly, so no adapter is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float
from ..train import LossTerm, Step
from .taps import Taps, classifier_path


def _normalized_distances(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    mean = d[off].mean().clamp_min(1e-12)
    return d[off] / mean


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the mean-normalized pairwise distances of the ``student`` and
    ``teacher`` embedding batches."""
    s, t = student.flatten(1), teacher.detach().flatten(1)
    return F.smooth_l1_loss(_normalized_distances(s), _normalized_distances(t))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # e_j - e_i, unit
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # cos of angle at each vertex i


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the cosines of the angles of all triples in the ``student`` and
    ``teacher`` embedding batches."""
    s, t = student.flatten(1), teacher.detach().flatten(1)
    return F.smooth_l1_loss(_angles(s), _angles(t))


class RKD(LossTerm):
    """``distance_weight · RKD-D + angle_weight · RKD-A`` on embeddings (defaults 25 and 50,
    the paper's). The embedding is the input of each network's classifier (its last
    Linear) unless ``layer`` names a module, or a dict ``{student path: teacher path}``;
    ``layer="logits"`` compares the outputs."""

    name = "rkd"

    def __init__(
        self,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        layer: str | dict[str, str] | None = None,
    ) -> None:
        self.distance_weight = check_float("distance_weight", distance_weight, minimum=0.0)
        self.angle_weight = check_float("angle_weight", angle_weight, minimum=0.0)
        if isinstance(layer, dict) and len(layer) != 1:
            raise ValueError(f"RKD compares one embedding: layer takes one pair, got {layer}")
        self.layer = layer
        self._taps: tuple[Taps, Taps] | None = None

    def setup(self, model: nn.Module, task, teacher: nn.Module | None = None) -> None:
        if teacher is None:
            raise ValueError("RKD needs a teacher: sc.fit(student, task, teacher=teacher, ...)")
        if self.layer == "logits":
            return
        if self.layer is None:
            s_path, t_path = classifier_path(model), classifier_path(teacher)
            inputs: tuple[str, ...] = (s_path, t_path)
        else:
            (s_path, t_path), inputs = (
                (
                    next(iter(self.layer.items()))
                    if isinstance(self.layer, dict)
                    else (self.layer, self.layer)
                ),
                (),
            )
        self._paths = (s_path, t_path)
        self._taps = (
            Taps(model, [s_path], "student", inputs),
            Taps(teacher, [t_path], "teacher", inputs),
        )

    def teardown(self, model: nn.Module) -> None:
        if self._taps is not None:
            for t in self._taps:
                t.remove()
            self._taps = None

    def __call__(self, step: Step) -> torch.Tensor:
        if self._taps is None:
            s, t = step.outputs, step.teacher_outputs
            assert t is not None  # setup() refused to run without a teacher
        else:
            s, t = self._taps[0].values[self._paths[0]], self._taps[1].values[self._paths[1]]
        loss = s.new_zeros(())
        if self.distance_weight:
            loss = loss + self.distance_weight * rkd_distance(s, t)
        if self.angle_weight:
            loss = loss + self.angle_weight * rkd_angle(s, t)
        return loss
