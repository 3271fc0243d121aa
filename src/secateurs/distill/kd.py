"""Knowledge distillation on logits (Hinton, Vinyals & Dean 2015, arXiv 1503.02531)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_float
from ..train import LossTerm, Step


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(z_t/T) || softmax(z_s/T))`` of the ``student`` and ``teacher``
    logits at ``temperature`` T, averaged over the batch.

    The T² factor keeps the gradients' scale independent of the temperature, as in the paper.
    """
    t = temperature
    log_p_s = F.log_softmax(student / t, dim=1)
    log_p_t = F.log_softmax(teacher.detach() / t, dim=1)
    return t * t * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


class KD(LossTerm):
    """``alpha · CE + (1 - alpha) · T² · KL(softmax(z_t/T) || softmax(z_s/T))``.

    The term returns the KL part and sets ``task_weight = alpha``, so :func:`sc.fit` weighs
    the cross-entropy by alpha; pass the teacher to ``sc.fit(..., teacher=teacher)``.
    """

    name = "kd"

    def __init__(self, alpha: float = 0.5, temperature: float = 4.0) -> None:
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
        self.temperature = check_float("temperature", temperature, minimum=0.0, strict_minimum=True)
        self.task_weight = self.alpha

    def setup(self, model, task, teacher=None) -> None:
        if teacher is None:
            raise ValueError("KD needs a teacher: sc.fit(student, task, teacher=teacher, ...)")

    def __call__(self, step: Step) -> torch.Tensor:
        assert step.teacher_outputs is not None  # setup() refused to run without a teacher
        return (1.0 - self.alpha) * kd_loss(step.outputs, step.teacher_outputs, self.temperature)
