"""What every benchmark script shares: the machine line, atomic JSON results, and the check
that the comparison tool is installed."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import tempfile
from pathlib import Path

import torch


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), Python {platform.python_version()}"
    )


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def locked_update(path: Path, fn) -> dict:
    """Read the JSON results at ``path``, apply ``fn`` to them, write them back atomically,
    all under an exclusive lock, so that one process per task can share one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.is_file() else {}
        fn(results)
        save_json(path, results)
    return results


def has_torch_pruning() -> bool:
    """True when Torch-Pruning is installed; says how to install it otherwise."""
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        print("this benchmark compares with Torch-Pruning: pip install torch-pruning")
        return False
    return True
