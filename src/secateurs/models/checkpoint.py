"""Checkpoints of zoo models: the builder's name and arguments plus the state dict.

Saved atomically (temporary file, then rename) and loaded with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import write_atomic
from ..data.task import Task
from .registry import create

FORMAT = "secateurs.checkpoint/1"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    write_atomic(path, lambda f: torch.save(obj, f))


def load_versioned(path: str | Path, fmt: str, what: str) -> dict:
    """``torch.load(weights_only=True)`` a dict written with ``"format": fmt``, or fail
    saying the file is not ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many kinds on a damaged file)
        raise ValueError(f"{path} cannot be read as a {what}; it is damaged or not a torch "
                         f"file ({type(err).__name__}: {str(err)[:200]})") from None  # fmt: skip
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (expected format {fmt!r})")
    return data


def save_checkpoint(
    model: nn.Module, path: str | Path, name: str, task: Task, width: float = 1.0, **kwargs
) -> None:
    """Save a zoo model so that :func:`load_checkpoint` can rebuild it for ``task``."""
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
    """Rebuild a model saved by :func:`save_checkpoint`; returns it and the checkpoint's fields."""
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
