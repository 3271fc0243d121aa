"""The train, prune, recover, verify loop (Han et al. 2015, arXiv 1506.02626)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from .._checks import check_choice, check_float, check_int, in_place
from ..data.task import Task
from ..measure import profile
from ..train import evaluate, fit
from .structured import channels

log = logging.getLogger(__name__)
SCHEDULES = ("linear", "agp")


@dataclass(frozen=True)
class LoopStep:
    """One prune-recover-verify step, measured after recovery."""

    step: int
    target_macs: float  # fraction of the original MACs this step aims at
    macs_kept: float  # fraction reached
    params: int
    macs: int
    val_accuracy: float
    test_accuracy: float


@dataclass
class LoopReport:
    """The trajectory, starting with the unpruned model as step 0."""

    steps: list[LoopStep] = field(default_factory=list)
    stopped: str = ""  # why the loop ended early, if it did

    @property
    def final(self) -> LoopStep:
        return self.steps[-1]


def _targets(target: float, steps: int, schedule: str) -> list[float]:
    """MAC fractions per step: evenly spaced ("linear") or Zhu & Gupta's cubic schedule
    ("agp", arXiv 1710.01878), which prunes fast first and gently at the end."""
    out = []
    for k in range(1, steps + 1):
        t = k / steps
        done = t if schedule == "linear" else 1 - (1 - t) ** 3
        out.append(1 - (1 - target) * done)
    return out


@in_place
def iterative(
    model: nn.Module,
    task: Task,
    *,
    importance: str = "l1",
    target_macs: float = 0.5,
    steps: int = 3,
    finetune_epochs: int = 2,
    schedule: str = "linear",
    min_accuracy: float | None = None,
    scope: str = "global",
    lr: float = 1e-3,
    seed: int = 0,
    teacher: nn.Module | None = None,
    losses: Sequence = (),
    **prune_kwargs,
) -> LoopReport:
    """Prune ``model`` in place to ``target_macs`` of its MACs in ``steps`` steps, each
    followed by ``finetune_epochs`` of recovery and a check on the validation split.

    Recovery is :func:`sc.fit` with ``teacher`` and ``losses``: pass a copy of the unpruned
    model and ``[sc.distill.KD()]`` to distill while recovering.

    With ``min_accuracy``, a step whose recovered validation accuracy falls below it is undone
    and the loop stops there, keeping the last model above the floor (the report says why).

    ``task`` gives the data; each step removes channels ranked by ``importance`` over
    ``scope`` (as ``channels``; ``prune_kwargs`` are its other options), toward the target
    by ``schedule`` (linear; agp, Zhu & Gupta's cubic steps), then recovers at learning
    rate ``lr``; ``seed`` fixes both.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a secateurs Task, got {type(task).__name__}")
    target_macs = check_float("target_macs", target_macs, minimum=0.0, maximum=1.0)
    steps = check_int("steps", steps, minimum=1)
    finetune_epochs = check_int("finetune_epochs", finetune_epochs, minimum=0)
    check_choice("schedule", schedule, SCHEDULES)
    if min_accuracy is not None:
        min_accuracy = check_float("min_accuracy", min_accuracy, minimum=0.0, maximum=1.0)
    x = task.example_inputs()
    macs0 = profile(model, x, latency=False).macs
    report = LoopReport()

    def record(k: int, target: float) -> LoopStep:
        prof = profile(model, x, latency=False)
        row = LoopStep(
            k,
            target,
            prof.macs / macs0,
            prof.params,
            prof.macs,
            evaluate(model, task, split="val"),
            evaluate(model, task, split="test"),
        )
        report.steps.append(row)
        return row

    start = record(0, 1.0)
    if min_accuracy is not None and start.val_accuracy < min_accuracy:
        report.stopped = (
            f"the unpruned model's validation accuracy {start.val_accuracy:.4f} is already "
            f"below min_accuracy={min_accuracy}; nothing was pruned"
        )
        return report
    for k, target in enumerate(_targets(target_macs, steps, schedule), start=1):
        backup = copy.deepcopy(model) if min_accuracy is not None else None
        current = report.steps[-1].macs / macs0
        channels(
            model,
            x,
            target_macs=min(1.0, target / current),
            importance=importance,
            scope=scope,
            data=task,
            seed=seed,
            **prune_kwargs,
        )
        if finetune_epochs:
            fit(
                model,
                task,
                epochs=finetune_epochs,
                lr=lr,
                seed=seed + k,
                progress=False,
                teacher=teacher,
                losses=losses,
            )
        row = record(k, target)
        log.info("step %d: %.1f%% MACs, val acc %.4f", k, 100 * row.macs_kept, row.val_accuracy)
        if min_accuracy is not None and row.val_accuracy < min_accuracy:
            report.steps.pop()
            model.__dict__.update(backup.__dict__)  # back to the model before this step
            report.stopped = (
                f"step {k} (to {target:.1%} of the MACs) recovered only "
                f"{row.val_accuracy:.4f} validation accuracy, below min_accuracy="
                f"{min_accuracy}; kept the model of step {k - 1} "
                f"({report.final.macs_kept:.1%} of the MACs)"
            )
            log.warning(report.stopped)
            break
    return report
