"""Coordinate attention on a teacher's features, so that the student imitates sharper maps.

Coordinate attention (Hou, Zhou & Feng 2021, arXiv 2103.02907) factorizes channel attention
along the two spatial axes: pooling along width and along height gives two direction-aware
descriptors, a shared 1x1 bottleneck mixes them, and two sigmoid gates reweight the feature
map per row and per column. Deng et al. 2024 (feature-enhanced distillation) attach such a
module to the teacher so that the features a student imitates carry where to look; here the
same idea serves classification: :func:`enhance_teacher` inserts the module after chosen
teacher layers, trains the teacher with it, and the student then distils from those layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .._checks import check_float, check_int
from ..data.task import Task
from ..train import fit
from .taps import default_feature_layer, pair_layers, probe


class CoordinateAttention(nn.Module):
    """``x · a_h · a_w`` with per-row gates ``a_h`` and per-column gates ``a_w``.

    Works on 2D feature maps (N, C, H, W) and on 1D ones (N, C, L), which are treated as
    (N, C, L, 1). The gates start near one (zero weights, bias 3, so sigmoid ≈ 0.95) so
    that inserting the module into a trained network barely changes it before training.
    """

    def __init__(self, channels: int, reduction: int = 32, min_hidden: int = 8) -> None:
        super().__init__()
        check_int("channels", channels, minimum=1)
        check_int("reduction", reduction, minimum=1)
        hidden = max(min_hidden, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.gate_h = nn.Conv2d(hidden, channels, 1)
        self.gate_w = nn.Conv2d(hidden, channels, 1)
        for gate in (self.gate_h, self.gate_w):
            nn.init.zeros_(gate.weight)
            nn.init.constant_(gate.bias, 3.0)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.dim() == 3
        if flat:
            x = x.unsqueeze(-1)
        if x.dim() != 4:
            raise ValueError(f"CoordinateAttention takes (N, C, H, W) or (N, C, L), got {x.shape}")
        h, w = x.shape[2:]
        pooled_h = x.mean(3, keepdim=True)  # N, C, H, 1
        pooled_w = x.mean(2, keepdim=True).transpose(2, 3)  # N, C, W, 1
        y = self.act(self.bn(self.reduce(torch.cat([pooled_h, pooled_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        out = x * torch.sigmoid(self.gate_h(y_h)) * torch.sigmoid(self.gate_w(y_w.transpose(2, 3)))
        return out.squeeze(-1) if flat else out


def enhance_teacher(
    teacher: nn.Module,
    task: Task,
    *,
    layers: str | list[str] | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    reduction: int = 32,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``teacher`` with a :class:`CoordinateAttention` after each of ``layers``
    (default: the last stage output), trained on ``task`` for ``epochs`` with the attention
    (at ``lr``, ``seed`` fixing the order), its channels squeezed by ``reduction``.

    Each layer ``p`` becomes ``nn.Sequential(layer, attention)`` at the same path, so a
    student distils from the attended features by naming ``p`` as before. The teacher
    itself is left unchanged.
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    epochs = check_int("epochs", epochs, minimum=0)
    lr = check_float("lr", lr, minimum=0.0, strict_minimum=True)
    paths = [
        t
        for _, t in pair_layers(default_feature_layer(teacher, task) if layers is None else layers)
    ]
    shapes = probe(teacher, task.example_inputs(), paths, "teacher")
    flat = [p for p in paths if len(shapes[p]) < 3]
    if flat:
        raise ValueError(f"enhance_teacher: layers {flat} give no feature map (N, C, ...)")
    enhanced = copy.deepcopy(teacher)
    device = next(teacher.parameters()).device
    for path in paths:
        layer = enhanced.get_submodule(path)
        attention = CoordinateAttention(shapes[path][1], reduction).to(device)
        enhanced.set_submodule(path, nn.Sequential(layer, attention))
    if epochs:
        fit(enhanced, task, epochs=epochs, lr=lr, seed=seed, progress=False)
    enhanced.eval()
    return enhanced
