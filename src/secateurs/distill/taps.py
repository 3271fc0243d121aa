"""Where distillation reads a network: named module outputs, matched student to teacher.

A student pruned from its teacher keeps the teacher's module paths, so a layer is named
once and found in both. Other students map their paths to the teacher's with a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..data.task import Task, call


def classifier_path(model: nn.Module) -> str:
    """Path of the last Linear layer of ``model``, the classifier, whose input is the
    embedding."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no Linear classifier to take the embedding from; "
            "name a layer instead"
        )
    return linears[-1]


class Taps:
    """Forward hooks that keep the latest output (or, for the classifier, input) of some
    modules of one network; ``values[path]`` holds it after each forward pass."""

    def __init__(self, model: nn.Module, paths: Sequence[str], who: str, inputs=()) -> None:
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            near = [n for n in modules if n and "." not in n][:12]
            raise ValueError(
                f"the {who} has no module {missing}; its top-level modules are {near} "
                "(name layers by module path; map student to teacher paths with a dict)"
            )
        self.values: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(paths):
            if path in inputs:
                hook = lambda m, args, path=path: self.values.__setitem__(path, args[0])  # noqa: E731
                self._handles.append(modules[path].register_forward_pre_hook(hook))
            else:
                hook = lambda m, a, out, path=path: self.values.__setitem__(path, out)  # noqa: E731
                self._handles.append(modules[path].register_forward_hook(hook))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.values.clear()


def pair_layers(layers: Sequence[str] | Mapping[str, str]) -> list[tuple[str, str]]:
    """(student path, teacher path) pairs from a list of shared paths or a dict."""
    if isinstance(layers, str):
        layers = [layers]
    pairs = list(layers.items()) if isinstance(layers, Mapping) else [(p, p) for p in layers]
    if not pairs:
        raise ValueError("no layers to distill: give module paths, or a dict student -> teacher")
    for s, t in pairs:
        if not isinstance(s, str) or not isinstance(t, str):
            raise TypeError(f"layers must be module paths (str), got {s!r} -> {t!r}")
    return pairs


@torch.no_grad()
def probe(model: nn.Module, x: torch.Tensor, paths: Sequence[str], who: str, inputs=()):
    """Shapes of the tapped tensors for one forward pass of ``x`` (mode restored)."""
    taps = Taps(model, paths, who, inputs)
    was_training = model.training
    model.eval()
    try:
        call(model, x)
        return {p: tuple(v.shape) for p, v in taps.values.items()}
    finally:
        model.train(was_training)
        taps.remove()


@torch.no_grad()
def _block_shapes(model: nn.Module, task: Task) -> dict[str, tuple[int, ...]]:
    children = [name for name, m in model.named_children() if any(True for _ in m.parameters())]
    shapes = probe(model, task.example_inputs(), children, "model")
    blocks = {n: shapes[n] for n in children if n in shapes and len(shapes[n]) >= 3}
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no top-level module with a feature map output; "
            "name the layers to distill"
        )
    return blocks


def block_outputs(model: nn.Module, task: Task) -> list[str]:
    """Top-level children of ``model`` that have weights and output a feature map on
    ``task``'s inputs, in order: the
    network's blocks, where layer-wise distillation hints. Parameter-free ones (an input
    padding) are left out: there the student's output is the teacher's."""
    return list(_block_shapes(model, task))


def stage_outputs(model: nn.Module, task: Task) -> list[str]:
    """Of :func:`block_outputs` (of ``model`` on ``task``), the last one at each resolution:
    the ends of the network's
    stages, where attention transfer compares (Zagoruyko & Komodakis 2017)."""
    shapes = _block_shapes(model, task)
    blocks = list(shapes)
    return [
        n
        for i, n in enumerate(blocks)
        if i + 1 == len(blocks) or shapes[blocks[i + 1]][2:] != shapes[n][2:]
    ]


def default_feature_layer(model: nn.Module, task: Task) -> str:
    """The last stage output: the final feature map before pooling and classification."""
    return stage_outputs(model, task)[-1]
