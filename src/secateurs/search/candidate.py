"""Evaluating candidates: one function, and backends that map it over many.

Every search scores its candidates through :func:`evaluate_candidate`, a plain top-level
function of picklable arguments, so a backend can run candidates one after another
(``"serial"``), in worker processes (``"process"``) or as Ray tasks (``"ray"``); the
benchmark grids run their cells through the same backends.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Protocol, cast

import torch
from torch import nn

from .._progress import Steps
from .._registry import Registry
from ..data.task import Task
from ..measure.latency import torch_threads
from ..prune.structured import channels
from ..train import Callback, FitState, evaluate, fit


class StopAfter(Callback):
    """End ``sc.fit`` after ``steps`` optimizer steps: a short fine-tune."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0

    def on_step_end(self, state: FitState) -> None:
        self.done += 1
        if self.done >= self.steps:
            state.stop = True


def finetune_steps(
    model: nn.Module, task: Task, steps: int, lr: float, seed: int, batch_size: int = 64
) -> None:
    """Train ``model`` for ``steps`` optimizer steps at a constant learning rate."""
    if steps <= 0:
        return
    per_epoch = math.ceil(len(task.train) / batch_size)
    fit(
        model,
        task,
        epochs=math.ceil(steps / per_epoch),
        lr=lr,
        batch_size=batch_size,
        schedule="constant",
        callbacks=[StopAfter(steps)],
        seed=seed,
        progress=False,
    )


def evaluate_candidate(
    model: nn.Module,
    task: Task,
    keep: dict[str, int],
    example_inputs: torch.Tensor,
    *,
    steps: int = 0,
    lr: float = 1e-3,
    importance: str = "l1",
    ignored: Sequence[str] = (),
    seed: int = 0,
    split: str = "val",
) -> float:
    """Accuracy on ``split`` of ``task`` of a copy of ``model`` pruned to ``keep``
    (inheriting the weights of its most important channels by ``importance``, the
    ``ignored`` modules left whole; ``example_inputs`` trace it) and fine-tuned for
    ``steps`` steps at ``lr``, ``seed`` fixing the order."""
    candidate = copy.deepcopy(model)
    channels(
        candidate,
        example_inputs,
        keep=keep,
        importance=importance,
        ignored=ignored,
        data=task,
        seed=seed,
    )
    finetune_steps(candidate, task, steps, lr, seed)
    return evaluate(candidate, task, split=split)


BACKENDS: Registry[Callable[..., object]] = Registry("search backend")


class Backend(Protocol):
    """Where jobs run: ``map(fn, jobs)`` returns ``[fn(job) for job in jobs]``, in order."""

    def map(self, fn: Callable, jobs: Sequence[dict]) -> list: ...


class SerialBackend:
    """Candidates one after another in this process, on one torch thread as every backend
    runs them (the caller's thread count is restored after), so that a cell or a candidate
    computes the same whichever backend ran it."""

    def map(self, fn: Callable, jobs: Sequence[dict], on_done: Callable | None = None) -> list:
        out = []
        with torch_threads(1):
            for job in jobs:
                out.append(fn(**job))
                if on_done is not None:
                    on_done()
        return out


def _single_thread() -> None:
    torch.set_num_threads(1)


class ProcessBackend:
    """Candidates in ``workers`` processes (default: the machine's cores), one thread each."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map(self, fn: Callable, jobs: Sequence[dict], on_done: Callable | None = None) -> list:
        if len(jobs) <= 1 or self.workers == 1:
            return SerialBackend().map(fn, jobs, on_done)
        with ProcessPoolExecutor(
            self.workers, mp_context=get_context("spawn"), initializer=_single_thread
        ) as pool:
            futures = [pool.submit(fn, **job) for job in jobs]
            if on_done is not None:
                for _ in as_completed(futures):
                    on_done()
            return [f.result() for f in futures]


def _call_single_threaded(fn: Callable, job: dict):
    torch.set_num_threads(1)
    return fn(**job)


class RayBackend:
    """Candidates as Ray tasks, one CPU each. ``address="local"`` starts a Ray instance
    on this machine (``workers`` CPUs, default all) on first use; ``"auto"`` or a
    ``ray://`` address joins a running cluster. ``close()`` stops what this backend
    started. Needs ``pip install 'secateurs[ray]'``."""

    def __init__(self, address: str = "local", workers: int | None = None) -> None:
        self.address, self._workers, self._started = address, workers, False

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "the Ray backend needs Ray: pip install 'secateurs[ray]' (or pip install ray)"
            ) from None
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
            if self.address == "local":
                ray.init(num_cpus=self._workers or os.cpu_count() or 1, **options)
            else:
                ray.init(address=self.address, **options)
            self._started = True
        return ray

    @property
    def workers(self) -> int:
        return int(self._ray().cluster_resources().get("CPU", 1))

    def map(self, fn: Callable, jobs: Sequence[dict], on_done: Callable | None = None) -> list:
        ray = self._ray()
        remote = ray.remote(num_cpus=1, max_retries=1)(_call_single_threaded)
        refs = [remote.remote(fn, job) for job in jobs]
        pending = list(refs)
        while on_done is not None and pending:
            _, pending = ray.wait(pending, num_returns=1)
            on_done()
        return ray.get(refs)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


BACKENDS.register("serial")(SerialBackend)
BACKENDS.register("process")(ProcessBackend)
BACKENDS.register("ray")(RayBackend)


def map_jobs(backend, fn: Callable, jobs: Sequence[dict], steps: Steps | None = None) -> list:
    """``backend.map(fn, jobs)``, advancing ``steps`` as each job ends where the backend
    reports it (``on_done``, as the built-in ones do), else all at once at the end."""
    if steps is None:
        return backend.map(fn, jobs)
    try:
        takes = "on_done" in inspect.signature(backend.map).parameters
    except (TypeError, ValueError):
        takes = False
    if takes:
        return backend.map(fn, jobs, on_done=steps.advance)
    out = backend.map(fn, jobs)
    steps.advance(len(jobs))
    return out


def get_backend(backend) -> Backend:
    """The backend ``backend`` names: a registered name ("serial", "process", "ray"), or
    anything with ``map(fn, jobs)``."""
    if isinstance(backend, str):
        return cast(Backend, BACKENDS.get(backend)())
    if backend is None:
        return SerialBackend()
    if not callable(getattr(backend, "map", None)):
        raise TypeError(
            f"backend must be a name ({', '.join(BACKENDS.names())}) or have "
            f"map(fn, jobs); got {type(backend).__name__}"
        )
    return backend
