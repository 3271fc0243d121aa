"""The model registry: ``@register_model`` on a builder ``(task, width=1.0, **kw) -> nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_float, check_int
from .._registry import Registry
from ..data.task import Task, call

MODELS: Registry = Registry("model")
register_model = MODELS.register


def list_models(*, pattern: str = "*") -> list[str]:
    """Names of the registered models, filtered by ``pattern`` (shell-style: ``"*net*"``)."""
    return MODELS.names(pattern)


MAX_WIDTH = 64.0  # as recipes bound it


def create(
    name: str, task: Task, *, width: float = 1.0, seed: int | None = None, **kwargs
) -> nn.Module:
    """Build the model ``name`` for ``task``: its input shape, its classes, and ``width``, a
    multiplier of every layer's channels; ``kwargs`` are the builder's own options.

    ``seed`` fixes the initial weights (default: torch's global generator). The returned
    model is checked on the task's example inputs, so a shape mismatch fails here, before
    any training.
    """
    builder = MODELS.get(name)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a secateurs Task (sc.data.load(...)), got {type(task)}")
    width = check_float("width", width, minimum=0.0, strict_minimum=True)
    if width > MAX_WIDTH:  # 1e4 would ask for terabytes before any check could run
        raise ValueError(
            f"width must be at most {MAX_WIDTH:g} (a zoo model {MAX_WIDTH:g} times as wide "
            f"is already far beyond a microcontroller), got {width:g}"
        )
    if seed is None:
        model = builder(task, width=width, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(check_int("seed", seed, minimum=0))
            model = builder(task, width=width, **kwargs)
    check_model_fits(model, task, name=name)
    return model


def check_model_fits(model: nn.Module, task: Task, *, name: str | None = None) -> None:
    """Fail with a clear message unless ``model`` maps ``task``'s inputs to its
    ``num_classes`` logits; ``name`` is how the message calls the model (default: its
    registered name or class)."""
    label = name or type(model).__name__
    x = task.example_inputs(2)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = call(model, x)
    except (RuntimeError, TypeError) as err:
        shapes = " and ".join(f"(N, {', '.join(map(str, s))})" for s in task.input_shapes)
        several = f"{task.num_inputs} inputs, " if task.num_inputs > 1 else ""
        raise ValueError(
            f"model {label!r} does not accept the inputs of task {task.name!r} "
            f"({several}shaped {shapes}): {err}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, task.num_classes):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"model {label!r} returns {got} for a batch of 2 inputs of task {task.name!r}; "
            f"expected (2, {task.num_classes}) logits, one per class"
        )


def import_object(spec: str):
    """The object ``spec``, ``"package.module:name"``, names (the current folder is importable
    too)."""
    import importlib
    import sys
    from pathlib import Path

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"{spec!r}: give 'package.module:name', such as 'my_pkg.models:build'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        obj = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"{spec!r}: cannot import {module!r} ({err}); run from the folder "
            "that holds it, or install it"
        ) from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{spec!r}: {module!r} has no {name!r}")
        obj = getattr(obj, part)
    return obj


def from_import(spec: str, *, seed: int = 0, **kwargs) -> nn.Module:
    """A user's model, ``spec``: ``"package.module:build"`` (a class, or a function returning an
    ``nn.Module``) called with ``kwargs``, its initial weights drawn with ``seed``."""
    builder = import_object(spec)
    if not callable(builder):
        raise ValueError(f"{spec!r} is not callable; point it at a class or a function")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
    return model
