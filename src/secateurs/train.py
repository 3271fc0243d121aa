"""Training and evaluation, with hooks that later stages plug into.

``LossTerm`` adds a term to the task loss (regularizers, distillation, quantization-guided
training); ``Callback`` is told when fitting, epochs and steps start and end (masks, ADMM
updates, schedules).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress, TaskID
from torch import nn

from . import _progress
from ._checks import check_choice, check_finite_model, check_float, check_int, in_place
from .data.forms import as_task
from .data.task import SPLITS, Inputs, Task, as_args, call, map_inputs, split_batch
from .models.registry import check_model_fits

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
DIVERGED = 1e4  # a mean cross-entropy no training that learns anything reaches
SCHEDULES = ("cosine", "constant")


@dataclass
class Step:
    """What a LossTerm sees at one training step."""

    model: nn.Module
    inputs: Inputs  # a tensor, or a tuple of tensors for a model with several inputs
    targets: torch.Tensor
    outputs: torch.Tensor
    teacher_outputs: torch.Tensor | None
    epoch: int
    step: int
    teacher: nn.Module | None = None


class LossTerm:
    """A term added to the task's cross-entropy loss at every step.

    Subclasses implement ``__call__(step) -> scalar tensor``; ``setup`` runs once before
    training (to register hooks on the model or the teacher, say) and ``teardown`` once
    after. ``parameters()`` yields the term's own trainable tensors (a distillation adapter,
    say), which :func:`fit` optimizes with the model's. ``task_weight`` scales the task's
    cross-entropy (knowledge distillation's alpha). Any callable taking a :class:`Step`
    also works as a loss term.
    """

    name: str = ""
    task_weight: float = 1.0

    def setup(self, model: nn.Module, task: Task, teacher: nn.Module | None = None) -> None:
        """Called once before the optimizer is built and the first step runs."""

    def parameters(self) -> list[nn.Parameter]:
        """Trainable tensors of the term itself, optimized together with the model's."""
        return []

    def teardown(self, model: nn.Module) -> None:
        """Called once after the last step, also when training fails."""

    def __call__(self, step: Step) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class History:
    """One record per epoch: train_loss, train_acc, val_acc, lr and each loss term's mean."""

    records: list[dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]

    @property
    def train_loss(self) -> list[float]:
        return self["train_loss"]

    @property
    def val_acc(self) -> list[float]:
        return self["val_acc"]

    @property
    def final_val_acc(self) -> float:
        return self.records[-1]["val_acc"] if self.records else float("nan")


@dataclass
class FitState:
    """What a Callback sees; set ``stop = True`` to end training after the current step."""

    model: nn.Module
    task: Task
    optimizer: torch.optim.Optimizer | None
    history: History
    epochs: int = 0
    epoch: int = 0
    step: int = 0
    loss: float = float("nan")
    stop: bool = False


class Callback:
    """Hooks into :func:`fit`; override the ones you need."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_epoch_start(self, state: FitState) -> None: ...

    def on_step_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


class RichProgress(Callback):
    """One bar over the epochs, showing the last loss and validation accuracy."""

    def __init__(self, description: str = "training", console: Console | None = None) -> None:
        self.description = description
        self.console = console
        self._progress: Progress | None = None
        self._bar: TaskID | None = None

    def on_fit_start(self, state: FitState) -> None:
        self._progress = _progress.bar(self.console)
        self._progress.start()
        self._bar = self._progress.add_task(self.description, total=state.epochs, status="")

    def on_epoch_end(self, state: FitState) -> None:
        r = state.history.records[-1]
        status = f"loss {r['train_loss']:.3f}  val acc {r['val_acc']:.3f}"
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, advance=1, status=status)

    def on_fit_end(self, state: FitState) -> None:
        if self._progress is not None:
            self._progress.stop()


def fit_progress(label: str, enabled: bool) -> Callback | bool:
    """What a long call passes to ``fit(progress=...)`` for its inner training: a bar
    named ``label`` where it would be seen, else nothing."""
    return RichProgress(label) if enabled and _progress.interactive() else False


def _default_progress() -> Callback:
    """A progress bar where output reaches a person (terminal, notebook), else a log line
    per epoch (at INFO, silent unless logging is configured)."""
    return RichProgress("training") if _progress.interactive() else _LogProgress()


class _LogProgress(Callback):
    def on_epoch_end(self, state: FitState) -> None:
        r = state.history.records[-1]
        log.info(
            "epoch %d: loss %.4f  train acc %.4f  val acc %.4f",
            r["epoch"],
            r["train_loss"],
            r["train_acc"],
            r["val_acc"],
        )


def _term_name(term: Callable, index: int) -> str:
    name = getattr(term, "name", "") or type(term).__name__
    return f"loss/{name}" if name not in ("function", "") else f"loss/term{index}"


def _make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@in_place
def fit(
    model: nn.Module,
    task: Task,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer: str = "adam",
    batch_size: int = 64,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str = "cosine",
    losses: Sequence[Callable[[Step], torch.Tensor]] = (),
    callbacks: Sequence[Callback] = (),
    teacher: nn.Module | None = None,
    seed: int = 0,
    progress: bool | Callback = True,
) -> History:
    """Train ``model`` in place on ``task.train`` with cross-entropy (or the task's own
    ``loss``) plus ``losses``. ``task`` is a Task or any form :func:`sc.data.as_task` takes.

    Validation accuracy is recorded after every epoch. ``teacher`` (run in eval mode without
    gradients) feeds its logits to the loss terms as ``Step.teacher_outputs``. The same seed
    gives the same result. ``progress`` True draws a bar over the epochs (loss, validation
    accuracy) in a terminal or a notebook, and otherwise (output piped or captured) logs
    each epoch at INFO; ``False`` shows nothing; a Callback shows it instead.
    Models with a ``fit_closed_form(task)`` method, such as the ELM, are solved directly.

    Options: ``epochs`` over ``task.train`` in batches of ``batch_size``; ``optimizer``
    (adam, adamw, sgd; ``momentum`` for sgd) at learning rate ``lr``, decayed by
    ``schedule`` (cosine, constant), with ``weight_decay``; ``callbacks``
    (:class:`Callback`), told of each epoch; ``seed`` for the batch order and dropout.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    task = as_task(task)
    epochs = check_int("epochs", epochs, minimum=0)
    lr = check_float("lr", lr, minimum=0.0, strict_minimum=True)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("schedule", schedule, SCHEDULES)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    weight_decay = check_float("weight_decay", weight_decay, minimum=0.0)
    seed = check_int("seed", seed, minimum=0)
    for i, term in enumerate(losses):
        if not callable(term):
            raise TypeError(f"losses[{i}] must be a LossTerm or a callable, got {term!r}")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}] must be a secateurs Callback, got {cb!r}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    check_model_fits(model, task)
    if teacher is not None:
        check_model_fits(teacher, task, name="teacher")

    callbacks = list(callbacks)
    if isinstance(progress, Callback):
        callbacks.append(progress)
    elif progress:
        callbacks.append(_default_progress())

    history = History()
    solve = getattr(model, "fit_closed_form", None)
    if callable(solve):
        if losses or teacher is not None:
            raise ValueError(
                f"{type(model).__name__} is solved in closed form; losses and teacher do not "
                "apply to it"
            )
        state = FitState(model, task, None, history, epochs=1)
        for cb in callbacks:
            cb.on_fit_start(state)
        solve(task)
        history.records.append(
            {
                "epoch": 1,
                "train_loss": float("nan"),
                "train_acc": evaluate(model, task, split="train"),
                "val_acc": evaluate(model, task, split="val"),
                "lr": float("nan"),
            }
        )
        for cb in callbacks:
            cb.on_epoch_end(state)
        for cb in callbacks:
            cb.on_fit_end(state)
        return history

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(
            model,
            task,
            epochs,
            lr,
            optimizer,
            batch_size,
            weight_decay,
            momentum,
            schedule,
            list(losses),
            callbacks,
            teacher,
            seed,
            history,
        )


def _train(
    model,
    task,
    epochs,
    lr,
    optimizer,
    batch_size,
    weight_decay,
    momentum,
    schedule,
    losses,
    callbacks,
    teacher,
    seed,
    history,
) -> History:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to fit")
    task_weight = _task_weight(losses)
    if teacher is not None:
        teacher_was_training = teacher.training
        teacher.eval()
    set_up: list[LossTerm] = []
    try:
        for term in losses:
            if isinstance(term, LossTerm):
                term.setup(model, task, teacher)
                set_up.append(term)
                params += [p for p in term.parameters() if p.requires_grad]
        return _loop(
            model,
            task,
            epochs,
            lr,
            optimizer,
            batch_size,
            weight_decay,
            momentum,
            schedule,
            losses,
            callbacks,
            teacher,
            seed,
            history,
            params,
            task_weight,
        )
    finally:
        for term in set_up:
            term.teardown(model)
        if teacher is not None:
            teacher.train(teacher_was_training)


def _task_weight(losses) -> float:
    weights = [(i, t.task_weight) for i, t in enumerate(losses) if isinstance(t, LossTerm)]
    changed = [(i, w) for i, w in weights if w != 1.0]
    if len(changed) > 1:
        raise ValueError(
            f"losses[{changed[0][0]}] and losses[{changed[1][0]}] both reweight the task loss "
            "(task_weight); keep one of them"
        )
    return changed[0][1] if changed else 1.0


def _loop(
    model,
    task,
    epochs,
    lr,
    optimizer,
    batch_size,
    weight_decay,
    momentum,
    schedule,
    losses,
    callbacks,
    teacher,
    seed,
    history,
    params,
    task_weight,
) -> History:
    opt = _make_optimizer(optimizer, params, lr, weight_decay, momentum)
    loader = task.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
    total_steps = max(1, epochs * len(loader))
    sched = (
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
        if schedule == "cosine"
        else None
    )
    device = next(iter(params)).device
    names = [_term_name(t, i) for i, t in enumerate(losses)]
    criterion = task.loss or F.cross_entropy
    state = FitState(model, task, opt, history, epochs=epochs)
    for cb in callbacks:
        cb.on_fit_start(state)
    for epoch in range(1, epochs + 1):
        state.epoch = epoch
        model.train()
        for cb in callbacks:
            cb.on_epoch_start(state)
        sums: dict[str, float] = dict.fromkeys(["train_loss", *names], 0.0)
        correct = seen = 0
        for batch in loader:
            x, y = split_batch(batch)
            x, y = map_inputs(lambda t: t.to(device), x), y.to(device)
            out = call(model, x)
            loss = criterion(out, y)
            if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
                raise TypeError(
                    f"the task's loss must return a scalar tensor, got "
                    f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss)}"
                )
            if task_weight != 1.0:
                loss = task_weight * loss
            t_out = None
            if teacher is not None:
                with torch.no_grad():
                    t_out = call(teacher, x)
            step = Step(model, x, y, out, t_out, epoch, state.step, teacher)
            for name, term in zip(names, losses):
                value = term(step)
                sums[name] += float(value.detach()) * len(y)
                loss = loss + value
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {float(loss.detach())} at epoch {epoch}, step "
                    f"{state.step}; lower lr (now {lr}) or check the loss terms"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            state.step += 1
            state.loss = float(loss.detach())
            sums["train_loss"] += state.loss * len(y)
            correct += int((out.detach().argmax(1) == y).sum())
            seen += len(y)
            for cb in callbacks:
                cb.on_step_end(state)
            if state.stop:
                break
        record = {"epoch": epoch, **{k: v / max(seen, 1) for k, v in sums.items()}}
        if criterion is F.cross_entropy and record["train_loss"] > DIVERGED:
            scale = max(float(t.detach().abs().max()) for t in as_args(x))
            raise FloatingPointError(
                f"training diverged: the mean cross-entropy of epoch {epoch} is "
                f"{record['train_loss']:.3g} (a model guessing scores about "
                f"{math.log(max(2, task.num_classes)):.2f}); inputs reach {scale:.3g} in "
                f"magnitude: normalize them, or lower lr (now {lr})"
            )
        record["train_acc"] = correct / max(seen, 1)
        record["val_acc"] = evaluate(model, task, split="val")
        record["lr"] = opt.param_groups[0]["lr"]
        history.records.append(record)
        for cb in callbacks:
            cb.on_epoch_end(state)
        if state.stop:
            break
    for cb in callbacks:
        cb.on_fit_end(state)
    model.eval()
    return history


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, *, split: str = "test", batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on one ``split`` of ``task`` (train, val, test; the
    model's mode is restored), or the task's own ``metric(outputs, targets)`` over the whole
    split where it has one, run in batches of ``batch_size``. ``task`` is a Task or any
    form :func:`sc.data.as_task` takes."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    task = as_task(task)
    check_choice("split", split, SPLITS)
    check_finite_model(model, "evaluate")
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    correct = total = 0
    outputs, targets = [], []
    try:
        for batch in task.loader(split, batch_size=batch_size, shuffle=False):
            x, y = split_batch(batch)
            out = call(model, map_inputs(lambda t: t.to(device), x)).cpu()
            if task.metric is not None:
                outputs.append(out)
                targets.append(y)
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if task.metric is not None:
        return float(task.metric(torch.cat(outputs), torch.cat(targets)))
    return correct / max(total, 1)
