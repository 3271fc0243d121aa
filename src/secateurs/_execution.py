"""Watch one forward pass op by op: the one place that touches torch's dispatch internals.

Three readers share it: the dependency graph (``graph.tracer``), the profiler
(``measure.trace``) and int8 capture (``quant.capture``). Each subclasses :class:`Watcher`
and decides what an op means to it in :meth:`Watcher.op`; :func:`watch` runs the pass the
same way for all of them. A ``TorchDispatchMode`` sees every ATen op below the Python
composites (multi-head attention, ``F.scaled_dot_product_attention``), and forward hooks on
every module keep a stack of module paths, so each op is known with the module that ran
it. The model runs in eval mode without gradients on clones of the inputs (an in-place op
cannot change the caller's tensors), and its training flag and the hooks are restored
whatever happens.

Whether ``torch.export`` could replace this trace was measured (``benchmarks/trace.py``):
see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

ROOT = "(model)"  # how the model's own forward is named: it has the empty module path


def label(path: str) -> str:
    """A module path as messages and reports print it (the root has the empty path)."""
    return path or ROOT


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor inside ``obj`` (nested tuples, lists and dicts), in order."""
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def map_tensors(fn: Callable[[Any], Any], obj):
    """``obj`` with every leaf replaced by ``fn(leaf)``, its nesting kept."""
    return tree_map(fn, obj)


def overloads(*packets) -> set:
    """Every overload of the ATen op packets given (``aten.add`` -> ``add.Tensor``, ...)."""
    return {getattr(packet, name) for packet in packets for name in packet.overloads()}


class Watcher(TorchDispatchMode):
    """One reader of a forward pass. ``stack`` holds the paths of the modules running."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def path(self) -> str:
        """The path of the innermost module running ("" for the model's own forward)."""
        return self.stack[-1] if self.stack else ""

    def where(self) -> str:
        """That module as messages name it."""
        return label(self.path())

    def begin(self, inputs: tuple) -> None:
        """Called once with the cloned inputs, before the model runs."""

    def enter(self, name: str, module: nn.Module, args, kwargs) -> None:
        self.stack.append(name)

    def leave(self, name: str, module: nn.Module, args, kwargs, output) -> None:
        self.stack.pop()

    def op(self, func, args: tuple, kwargs: dict):
        """Run one ATen op and return its result (the default only runs it)."""
        return func(*args, **kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.op(func, args, kwargs or {})


def watch(model: nn.Module, inputs, watcher: Watcher, *, modes: Iterable = ()) -> tuple:
    """Run ``model`` once on ``inputs`` (a tensor or a tuple, one per model input) under
    ``watcher`` (and the extra context managers in ``modes``, entered outside it); returns
    the cloned inputs the model ran on and its output."""
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    inputs = tuple(t.detach().clone() if isinstance(t, torch.Tensor) else t for t in inputs)

    def enter(name: str):
        def hook(module, args, kwargs):
            watcher.enter(name, module, args, kwargs)  # returns None: the arguments are kept

        return hook

    def leave(name: str):
        def hook(module, args, kwargs, output):
            watcher.leave(name, module, args, kwargs, output)  # None: the output is kept

        return hook

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name), with_kwargs=True))
        handles.append(module.register_forward_hook(leave(name), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            watcher.begin(inputs)
            for mode in modes:
                stack.enter_context(mode)
            stack.enter_context(watcher)
            out = model(*inputs)
        return inputs, out
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
