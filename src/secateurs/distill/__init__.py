"""Knowledge distillation: KD, relational KD, feature and attention KD, and a coordinate-
attention teacher; loss terms for ``sc.fit(..., teacher=...)`` and one ``distill`` verb."""

from __future__ import annotations

from .attention import CoordinateAttention, enhance_teacher
from .features import AttentionKD, FeatureKD, attention_map
from .flow import METHODS, distill
from .kd import KD, kd_loss
from .relational import RKD, rkd_angle, rkd_distance
from .taps import block_outputs, classifier_path, stage_outputs

__all__ = [
    "KD",
    "METHODS",
    "RKD",
    "AttentionKD",
    "CoordinateAttention",
    "FeatureKD",
    "attention_map",
    "block_outputs",
    "classifier_path",
    "distill",
    "enhance_teacher",
    "kd_loss",
    "rkd_angle",
    "rkd_distance",
    "stage_outputs",
]
