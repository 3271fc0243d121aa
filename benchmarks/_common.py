"""What every benchmark script shares: the machine line, atomic JSON results, the check
that the comparison tool is installed, and what resuming and rerunning need."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

import secateurs as sc

# the zoo models the deployment benchmarks export, at widths that fit a microcontroller
ZOO = [
    ("mlp", {}),
    ("lenet_300_100", {}),
    ("lenet5", {}),
    ("resnet8", {}),
    ("ds_cnn", {}),
    ("mobilenet_v1", {"width": 0.25}),
    ("mobilenet_v2", {"width": 0.35, "last_channels": 128}),
    ("shufflenet_v1", {"width": 0.5}),
    ("shufflenet_v2", {"width": 0.5}),
    ("ghostnet", {"width": 0.3}),
    ("elm", {}),
]
LIGHTWEIGHT = [  # the review's other lightweight designs, small configurations
    ("mobilenet_v3", {"width": 0.35, "last_channels": 128}),
    ("efficientnet", {"width": 0.25, "depth": 0.34, "last_channels": 128}),
    ("efficientnet", {"lite": True, "width": 0.25, "depth": 0.34, "last_channels": 128}),
    ("xception", {"width": 0.0625, "middle_blocks": 1}),
    ("shufflenet_residual", {"width": 0.5}),
    ("masr_classifier", {}),
]


def _cpu_model() -> str:
    """The CPU's model name (training differs between CPU models, so results name it)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "unknown CPU"


def machine() -> str:
    return (
        f"{platform.machine()} ({_cpu_model()}), {os.cpu_count()} cores, "
        f"torch {torch.__version__}, "
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


def check_reproduced(what: str, score: float, stored: float | None, results: Path) -> None:
    """A resumed run trains ``what`` again; its new cells are comparable with the stored ones
    only if it is the same model, so its ``score`` must equal the ``stored`` one (if any)."""
    if stored is not None and score != stored:
        raise RuntimeError(
            f"{what}: retrained, it scores {score}, the stored one {stored}; training is not "
            f"reproducible here, so the stored cells do not belong to it: delete {results} "
            "and rerun every cell"
        )


def without_methods(cells: dict, methods, tasks=None) -> dict:
    """``cells`` less those of ``methods`` (on ``tasks``, if given), for keys that start
    task/<anything>/method/..."""
    return {
        k: v
        for k, v in cells.items()
        if not (k.split("/")[2] in methods and (tasks is None or k.split("/")[0] in tasks))
    }


def accuracies(model, task) -> dict:
    """Test and validation accuracy of ``model`` on ``task``, as benchmark cells store them."""
    return {
        "accuracy": sc.evaluate(model, task),
        "val_accuracy": sc.evaluate(model, task, split="val"),
    }


def task_parser(doc: str, tasks, methods, held_out_help: str) -> argparse.ArgumentParser:
    """The options the scripts that run one process per task share: ``--seeds``,
    ``--tasks``, ``--held-out`` and ``--rerun`` (a method's cells measured again)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", nargs="+", default=list(tasks), choices=tasks)
    parser.add_argument("--held-out", action="store_true", help=held_out_help)
    parser.add_argument(
        "--rerun",
        action="append",
        default=[],
        choices=methods,
        help="measure this method's cells again (repeatable)",
    )
    return parser
