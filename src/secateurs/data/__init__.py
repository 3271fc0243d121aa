"""Tasks: built-in data sets made offline, and a user's own files.

task = sc.data.load("digits")           # or "mnist1d", "path/to/data.npz", "path/to/folder"
task = sc.data.as_task((train_loader, val_loader))   # a user's own loaders, tensors, ...
"""

from __future__ import annotations

from pathlib import Path

from .._checks import check_int
from . import builtin, kws, real  # noqa: F401  (register the built-in tasks)
from .files import load_image_folder, load_npz
from .forms import as_task
from .registry import TASKS, list_tasks, register_task
from .task import Task

__all__ = [
    "Task",
    "as_task",
    "load",
    "list_tasks",
    "register_task",
    "load_npz",
    "load_image_folder",
]


def load(name: str | Path, seed: int = 0, **kwargs) -> Task:
    """A registered task by name, or a user's ``.npz`` file or image folder by path.

    ``seed`` fixes the train/validation/test split.
    """
    seed = check_int("seed", seed, minimum=0)
    if isinstance(name, str) and name in TASKS:
        return TASKS.get(name)(seed=seed, **kwargs)
    if not isinstance(name, (str, Path)):
        raise TypeError(f"task must be a name or a path, got {type(name).__name__}")
    path = Path(name)
    if kwargs and (path.is_dir() or path.is_file()):
        raise TypeError(f"options {sorted(kwargs)} apply to registered tasks, not to files")
    if path.is_dir():
        return load_image_folder(path, seed=seed)
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a task file must be an .npz archive, got {path.suffix!r}")
        return load_npz(path, seed=seed)
    raise ValueError(
        f"unknown task {str(name)!r}; known tasks: {', '.join(list_tasks())}; "
        "or give the path of an .npz file or of an image folder"
    )
