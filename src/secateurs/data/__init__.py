"""Tasks: built-in data sets made offline, and a user's own files.

task = sc.data.load("digits")           # or "mnist1d", "path/to/data.npz", "path/to/folder"
task = sc.data.as_task((train_loader, val_loader))   # a user's own loaders, tensors, ...
"""

from __future__ import annotations

from . import builtin, kws, real  # noqa: F401  (register the built-in tasks)
from .files import load, load_image_folder, load_npz
from .forms import as_task
from .registry import TASKS, list_tasks, register_task
from .task import Task

__all__ = [
    "TASKS",
    "Task",
    "as_task",
    "list_tasks",
    "load",
    "load_image_folder",
    "load_npz",
    "register_task",
]
