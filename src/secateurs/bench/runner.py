"""Running a grid: train the parents, then every cell not done yet, on a backend.

Cells go to the backend in rounds as wide as its workers; each result is written to the
store as soon as its round returns, so an interrupt loses at most one round, and each
cell's recipe run resumes from its own last finished stage.
"""

from __future__ import annotations

import math
import shutil
import traceback
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from .. import data, models
from .._io import inside, safe_name
from .._progress import Steps
from ..models.checkpoint import save_checkpoint
from ..recipe import run as run_recipe
from ..search.candidate import get_backend, map_jobs
from ..train import evaluate, fit
from .grid import (
    CONTROL,
    Cell,
    Grid,
    cell_digest,
    cell_recipe,
    cells,
    load_grid,
    parent_digest,
    parse_grid,
)
from .store import Store

METRICS = (
    "accuracy",
    "params",
    "nonzero_params",
    "macs",
    "nonzero_macs",
    "flash_bytes",
    "peak_sram_bytes",
    "latency_ms",
)


def parent_path(grid: Grid, root: Path, task: str, model: str, seed: int) -> Path:
    digest = parent_digest(grid, model, task)
    return inside(root, root / "parents" / f"{safe_name(f'{task}-{model}-{seed}')}-{digest}.pt")


def cell_folder(root: Path, grid: Grid, cell) -> Path:
    name = safe_name(cell.key.replace("/", "__"))
    return inside(root, root / "cells" / f"{name}-{cell_digest(grid, cell)}")


def train_parent(grid: Grid, task: str, model: str, seed: int, root: str) -> float:
    """Train the parent of ``grid``'s ``model`` on ``task`` with ``seed`` and save it under
    ``root`` where its cells look for it; returns its accuracy."""
    path = parent_path(grid, Path(root), task, model, seed)
    t = data.load(task, seed=seed, **grid.task_args.get(task, {}))
    spec = grid.models[model]
    assert spec.name is not None  # a grid's models are zoo models, by name
    net = models.create(spec.name, t, width=spec.width, seed=seed, **spec.args)
    fit(net, t, **grid.train, seed=seed, progress=False)
    save_checkpoint(net, path, spec.name, t, width=spec.width, **spec.args)
    return evaluate(net, t)


def run_cell(grid: Grid, cell, root: str) -> dict:
    """The recipe run of ``grid``'s ``cell`` (resumable, in ``root/cells``); its final
    metrics, or the
    error. Never raises, so one failing cell does not stop a round."""
    try:
        out = cell_folder(Path(root), grid, cell)
        recipe = cell_recipe(grid, cell, parent_path(grid, Path(root), *cell.parent))
        result = run_recipe(recipe, out, resume=True)
        final = result.records[-1]
        prof = final["profile"]
        metrics = {m: prof.get(m) for m in METRICS[1:]}
        metrics["accuracy"] = final["accuracy"]
        metrics["flash_bytes"] = final["flash_bytes"]
        metrics["wall_s"] = sum(r["wall_s"] for r in result.records)
        metrics["torch_threads"] = torch.get_num_threads()  # one, on every backend
        counted = [r["details"] for r in result.records if "instructions" in r["details"]]
        if counted:  # the last C export that counted its instructions
            metrics["instructions"] = counted[-1]["instructions"]
            metrics["target_latency_ms"] = counted[-1]["latency_ms"]
        return {"metrics": metrics}
    except Exception:
        return {"error": traceback.format_exc()[-4000:]}


def _check_parents(db: Store, parents: list[tuple], scores: list[float]) -> None:
    """Parents trained again for a store that holds their control cells (after their files
    were lost, or cells imported from a published grid) must score as those did: else the
    stored cells started from other models and new ones would not be comparable."""
    done = {r["key"]: r["metrics"] for r in db.rows("done")}
    for (task, model, seed), score in zip(parents, scores):
        key = Cell(task, model, CONTROL, 1.0, seed).key
        stored = (done.get(key) or {}).get("accuracy")
        if stored is not None and score != stored:
            raise RuntimeError(
                f"the parent of {task}/{model}, seed {seed}, trained again, scores {score}; "
                f"its stored control cell {key} scored {stored}. Training is not reproducible "
                "here, so the stored cells do not belong to it: run them again (rerun= or "
                "--rerun for each method) or start a new store"
            )


@dataclass
class GridRun:
    """What one call did: cells run, failed, skipped as done already, and the cells left
    undone because their attempts ran out (``max_attempts``), each with its last error."""

    ran: int
    failed: int
    skipped: int
    exhausted: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every cell of the grid is done."""
        return not self.failed and not self.exhausted


@contextmanager
def store_lock(store: str | Path):
    """Hold ``store``'s lock file for one runner at a time; a second one is refused."""
    import fcntl

    path = Path(store).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another `bench run` is using {store} (it holds {path}); wait for it to end, "
                "or run into another store"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_grid(
    grid,
    store: str | Path,
    *,
    root: str | Path | None = None,
    backend="serial",
    max_attempts: int = 3,
    console: Console | None = None,
    rerun: Iterable[str] = (),
    retry_failed: bool = False,
    progress: bool = True,
) -> GridRun:
    """Run every cell of ``grid`` (a path or a validated Grid) that ``store`` does not
    hold as done. ``root`` (default: beside the store) keeps the parents and each cell's
    run folder. ``backend``: "serial", "process", "ray" (a local Ray instance) or any
    object with ``map(fn, jobs)``, such as ``sc.search.RayBackend("auto")``. ``rerun``:
    methods whose cells run again from scratch although done (the digests see a changed
    grid, not changed code). A failing cell is tried ``max_attempts`` times in all (over runs);
    ``retry_failed``: cells whose attempts ran out get them back.
    ``progress``: bars over the parents and the cells, where output reaches a person (or
    on ``console``).
    One runner per store at a time: a second is refused while the first holds the lock."""
    with store_lock(store):
        return _run_grid(
            grid, store, root, backend, max_attempts, console, rerun, retry_failed, progress
        )


def _run_grid(
    grid, store, root, backend, max_attempts, console, rerun, retry_failed, progress
) -> GridRun:
    grid = (
        grid
        if isinstance(grid, Grid)
        else (parse_grid(grid) if isinstance(grid, dict) else load_grid(grid))
    )
    db = Store(store)
    root = Path(root) if root is not None else Path(store).with_suffix("")
    everything = cells(grid)
    db.add(grid.name, everything, [cell_digest(grid, c) for c in everything])
    rerun = set(rerun)
    unknown = sorted(rerun - set(grid.methods) - {CONTROL})
    if unknown:
        raise ValueError(
            f"rerun names methods {unknown} the grid lacks; its methods: {sorted(grid.methods)}"
        )
    undone = {r["key"] for r in db.rows() if r["status"] != "done"} if retry_failed else set()
    again = [c for c in everything if c.method in rerun or c.key in undone]
    db.reset([c.key for c in again])
    for c in again:
        shutil.rmtree(cell_folder(Path(root), grid, c), ignore_errors=True)
    todo = db.todo(everything, max_attempts)
    runner = get_backend(backend)
    backend_owned = isinstance(backend, str)
    width = max(1, getattr(runner, "workers", 1)) if todo else 1

    parents = sorted({c.parent for c in todo if not parent_path(grid, root, *c.parent).is_file()})
    jobs = [
        {"grid": grid, "task": t, "model": m, "seed": s, "root": str(root)} for t, m, s in parents
    ]
    if jobs:
        if console is not None:
            console.print(f"training {len(jobs)} parent model(s)")
        with Steps(f"{grid.name}: parents", len(jobs), progress, console) as bar:
            scores = map_jobs(runner, train_parent, jobs, bar)
        _check_parents(db, parents, scores)

    failed = 0
    rounds = math.ceil(len(todo) / width)
    with Steps(f"{grid.name}: cells", len(todo), progress and bool(todo), console) as bar:
        for r in range(rounds):
            batch = todo[r * width : (r + 1) * width]
            for c in batch:
                db.start(c.key)
            try:
                results = runner.map(
                    run_cell, [{"grid": grid, "cell": c, "root": str(root)} for c in batch]
                )
            except KeyboardInterrupt:
                raise
            except Exception as err:
                results = [{"error": f"the backend lost this round: {err!r}"}] * len(batch)
            for i, (c, res) in enumerate(zip(batch, results)):
                db.finish(c.key, res.get("metrics"), res.get("error"))
                failed += "error" in res
                if console is not None:
                    status = "failed" if "error" in res else f"{res['metrics']['accuracy']:.4f}"
                    console.print(f"[{r * width + i + 1}/{len(todo)}] {c.key}: {status}")
            bar.advance(len(batch), status=f"{failed} failed" if failed else "")
    close = getattr(runner, "close", None)
    if backend_owned and callable(close):
        close()
    keys = {c.key for c in everything} - {c.key for c in todo}
    rows = {r["key"]: r for r in db.rows()}
    exhausted = {
        k: rows[k]["error"]
        or f"{rows[k]['status']} after {rows[k]['attempts']} attempts (the process died)"
        for k in sorted(keys)
        if rows[k]["status"] != "done"
    }
    done_before = len(keys) - len(exhausted)
    return GridRun(len(todo), failed, done_before, exhausted)
