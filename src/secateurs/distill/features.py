"""Distillation of intermediate features: FitNets hints and attention transfer.

- :class:`FeatureKD` (Romero et al. 2015, FitNets, arXiv 1412.6550): the student's feature
  map, through a learned 1x1 adapter where the widths differ, regresses the teacher's.
- :class:`AttentionKD` (Zagoruyko & Komodakis 2017, arXiv 1612.03928): the student matches
  the teacher's spatial attention maps, the channel mean of squared activations; widths
  need not match.

Layers are module paths, shared by a student pruned from its teacher, or a dict
``{student path: teacher path}``; by default FeatureKD uses the last stage output and
AttentionKD every stage output of the teacher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_float
from ..train import LossTerm, Step
from .taps import Taps, default_feature_layer, pair_layers, probe, stage_outputs

Layers = Sequence[str] | Mapping[str, str] | str | None


class _LayerTerm(LossTerm):
    """Taps the paired layers of student and teacher and checks their shapes at setup."""

    def __init__(self, layers: Layers, weight: float) -> None:
        self.layers = layers
        self.weight = check_float("weight", weight, minimum=0.0)
        self.pairs: list[tuple[str, str]] = []
        self._taps: tuple[Taps, Taps] | None = None

    def _default_layers(self, teacher: nn.Module, task) -> list[str]:
        raise NotImplementedError

    def _build(self, model: nn.Module, pairs, s_shapes, t_shapes) -> None:
        """Create what the term needs for these shapes (adapters, say)."""

    def setup(self, model: nn.Module, task, teacher: nn.Module | None = None) -> None:
        if teacher is None:
            raise ValueError(
                f"{type(self).__name__} needs a teacher: sc.fit(student, task, teacher=...)"
            )
        layers = self._default_layers(teacher, task) if self.layers is None else self.layers
        pairs = pair_layers(layers)
        x = task.example_inputs()
        s_shapes = probe(model, x, [s for s, _ in pairs], "student")
        t_shapes = probe(teacher, x, [t for _, t in pairs], "teacher")
        for s, t in pairs:
            ss, ts = s_shapes[s], t_shapes[t]
            if len(ss) != len(ts) or ss[2:] != ts[2:]:
                raise ValueError(
                    f"{type(self).__name__}: student layer {s!r} gives shape {ss} but teacher "
                    f"layer {t!r} gives {ts}; paired layers need the same spatial size "
                    "(pair layers at the same resolution)"
                )
        self.pairs = pairs
        self._build(model, pairs, s_shapes, t_shapes)
        self._taps = (
            Taps(model, [s for s, _ in pairs], "student"),
            Taps(teacher, [t for _, t in pairs], "teacher"),
        )

    def teardown(self, model: nn.Module) -> None:
        if self._taps is not None:
            for taps in self._taps:
                taps.remove()
            self._taps = None

    def _features(self):
        student, teacher = self._taps
        for s, t in self.pairs:
            yield s, student.values[s], teacher.values[t].detach()


class FeatureKD(_LayerTerm):
    """``weight · Σ_layers ||A(f_s) - f_t||² / ||f_t||²`` (mean squares over the batch): a
    FitNets hint, normalized by the teacher's feature energy so the weight is scale-free.

    ``A`` is a 1x1 convolution (a Linear for flat features) from the student's width to the
    teacher's, created at setup where the widths differ and trained with the student;
    ``adapters`` holds them afterwards.
    """

    name = "feature_kd"

    def __init__(self, layers: Layers = None, weight: float = 1.0) -> None:
        super().__init__(layers, weight)
        self.adapters = nn.ModuleDict()

    def _default_layers(self, teacher, task) -> list[str]:
        return [default_feature_layer(teacher, task)]

    def _build(self, model, pairs, s_shapes, t_shapes) -> None:
        device = next(model.parameters()).device
        self.adapters = nn.ModuleDict()
        for s, t in pairs:
            cs, ct = s_shapes[s][1], t_shapes[t][1]
            if cs == ct:
                continue
            nd = len(s_shapes[s]) - 2
            adapter = (
                nn.Linear(cs, ct, bias=False)
                if nd == 0
                else (nn.Conv1d if nd == 1 else nn.Conv2d)(cs, ct, 1, bias=False)
            )
            self.adapters[s.replace(".", "/")] = adapter.to(device)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.adapters.parameters())

    def __call__(self, step: Step) -> torch.Tensor:
        total = step.outputs.new_zeros(())
        for s, fs, ft in self._features():
            key = s.replace(".", "/")
            if key in self.adapters:
                fs = self.adapters[key](fs)
            total = total + ((fs - ft) ** 2).mean() / (ft**2).mean().clamp_min(1e-8)
        return self.weight * total


def attention_map(x: torch.Tensor, *, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis's spatial attention of the feature map ``x``: mean over channels
    of |x|^``p``, flattened per
    sample and L2-normalized."""
    return F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1)


class AttentionKD(_LayerTerm):
    """``weight / 2 · Σ_layers mean_batch ||Q_s - Q_t||²`` with Q the L2-normalized attention
    map. Summing over positions (the paper's norm) rather than averaging keeps the weight
    independent of resolution; weight 1 matches the reference code's beta = 1000 with its
    per-position mean on 32x32 maps."""

    def __init__(self, layers: Layers = None, weight: float = 1.0, p: float = 2.0) -> None:
        super().__init__(layers, weight)
        self.p = check_float("p", p, minimum=0.0, strict_minimum=True)

    def _default_layers(self, teacher, task) -> list[str]:
        return stage_outputs(teacher, task)

    def _build(self, model, pairs, s_shapes, t_shapes) -> None:
        flat = [s for s, _ in pairs if len(s_shapes[s]) < 3]
        if flat:
            raise ValueError(
                f"AttentionKD: student layers {flat} give flat features without a spatial "
                "axis; attention transfer needs feature maps (use FeatureKD for these)"
            )

    def __call__(self, step: Step) -> torch.Tensor:
        total = step.outputs.new_zeros(())
        for _, fs, ft in self._features():
            diff = attention_map(fs, p=self.p) - attention_map(ft, p=self.p)
            total = total + diff.pow(2).sum(1).mean()
        return self.weight / 2 * total
