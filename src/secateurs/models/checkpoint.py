"""Checkpoints of zoo models (the builder's name and arguments plus the state dict), and
the one way weights are read here: every file, a checkpoint, a run state or a user's
state dict, goes through :func:`read_weights_file` (``weights_only=True``).

Saved atomically (temporary file, then rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import in_place
from .._io import write_atomic
from ..data.task import Task
from .registry import create

FORMAT = "secateurs.checkpoint/1"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    write_atomic(path, lambda f: torch.save(obj, f))


def read_weights_file(path: str | Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` of ``path``, for every loader of weights here:
    a missing or unreadable file fails naming ``what`` (the argument or field that gave
    it) and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{what}: {path} cannot be loaded as a weights-only torch file; it "
            f"is damaged or not a torch file ({type(err).__name__}: "
            f"{str(err)[:200]})"
        ) from None


def state_dict_of(obj: Any, path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict ``obj`` holds: a plain one (``torch.save(model.state_dict(), path)``)
    or a secateurs checkpoint's (``secateurs train --out``)."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["state_dict"]
    if (
        isinstance(obj, dict)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return obj
    raise ValueError(
        f"{what}: {path} is not a state dict (a mapping of parameter names to tensors) nor a "
        "secateurs checkpoint; save the model with torch.save(model.state_dict(), path) or "
        "with `secateurs train --out`"
    )


@in_place
def load_weights(model: nn.Module, path: str | Path, *, what: str = "weights") -> nn.Module:
    """Load the weights of ``path`` (a state dict or a secateurs checkpoint) into
    ``model`` in place, and return it; a file that does not fit says which keys or shapes
    differ, naming the file ``what`` says it is (weights, a checkpoint)."""
    state = state_dict_of(read_weights_file(path, what), path, what)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{what}: {path} does not fit the model: {str(err)[:500]}") from None
    return model


def load_versioned(path: str | Path, fmt: str, what: str) -> dict:
    """A dict written with ``"format": fmt`` (a checkpoint, a run state), or fail saying
    the file is not ``what``."""
    data = read_weights_file(path, what)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (expected format {fmt!r})")
    return data


def save_checkpoint(
    model: nn.Module, path: str | Path, name: str, task: Task, *, width: float = 1.0, **kwargs
) -> None:
    """Save ``model``, built as the zoo's ``name`` at ``width`` (with the builder's ``kwargs``),
    to ``path`` (atomically) so that :func:`load_checkpoint` can rebuild it for ``task``."""
    atomic_save(
        {
            "format": FORMAT,
            "model": name,
            "task": task.name,
            "width": float(width),
            "kwargs": kwargs,
            "state_dict": model.state_dict(),
        },
        path,
    )


def load_checkpoint(path: str | Path, task: Task) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at ``path`` by :func:`save_checkpoint`, for ``task`` (its input
    shape and classes); returns it and the checkpoint's fields."""
    ckpt = load_versioned(path, FORMAT, "secateurs checkpoint")
    if ckpt["task"] != task.name:
        raise ValueError(
            f"{path} was trained on task {ckpt['task']!r}, not {task.name!r}; pass that task"
        )
    model = create(ckpt["model"], task, width=ckpt["width"], **ckpt["kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta
