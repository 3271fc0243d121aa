"""Grids: tasks x models x methods x operating points x seeds, each cell one recipe run.

A grid file (YAML)::

    name: tiny
    tasks: [digits]
    models:
      lenet5: {name: lenet5}
    train: {epochs: 6, lr: 0.003}        # the parent every method starts from
    methods:                              # recipe stages; "{keep}" is the operating point,
                                          # "{drop}" one minus it
      l1: [{prune: {target_macs: "{keep}", importance: l1}}, {finetune: {epochs: 2}}]
      random: [{prune: {target_macs: "{keep}", importance: random}}, {finetune: {epochs: 2}}]
    keep: [0.5, 0.25]                     # fractions kept (of MACs, here)
    seeds: [0, 1]

Every (task, model, seed) gets one trained parent, shared by all its cells, so every
method sees the same data and training budget (Blalock et al. 2020, arXiv 2003.03033);
the unpruned parent itself is the ``control`` cell at keep 1.

Each cell and each parent carries a digest of what it runs (the recipe, the parent's
training and model), so editing a method or the training in the grid file reruns exactly
the cells it changes; the others stay done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .._io import load_yaml
from ..recipe.schema import (
    Checked,
    ModelSpec,
    RecipeError,
    Train,
    _problems,
    check_task_args,
    parse_recipe,
)

KEEP = "{keep}"
DROP = "{drop}"  # 1 - keep: a sparsity, say
CONTROL = "control"


class Grid(Checked):
    """A validated grid; build one with :func:`load_grid`."""

    name: str
    tasks: list[str] = Field(min_length=1)
    # options of a built-in task, by task name: {fashion_mnist: {train_size: 6000}}
    task_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, list[dict[str, Any]]] = Field(min_length=1)
    keep: list[float] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    target: str = "cortex-m4"

    @model_validator(mode="after")
    def _task_args(self) -> Grid:
        for task, args in self.task_args.items():
            if task not in self.tasks:
                raise ValueError(f"task_args names {task!r}, which is not one of the tasks")
            check_task_args(task, args)
        return self

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: list[float]) -> list[float]:
        for k in v:
            if not 0 < k < 1:
                raise ValueError(
                    f"operating points are kept fractions in (0, 1); got {k} "
                    "(the unpruned control at 1 is always run)"
                )
        return sorted(set(v), reverse=True)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: dict) -> dict:
        if CONTROL in v:
            raise ValueError(f"'{CONTROL}' names the unpruned parent; pick another method name")
        return v

    @field_validator("train")
    @classmethod
    def _train(cls, v: dict) -> dict:
        Train.model_validate(v)
        return v


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    task: str
    model: str
    method: str
    keep: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.model}/{self.method}/{self.keep:g}/{self.seed}"

    @property
    def parent(self) -> tuple[str, str, int]:
        return self.task, self.model, self.seed


def substitute(stages: list, keep: float) -> list:
    """The method's stages with every ``"{keep}"`` value replaced by the operating point
    and every ``"{drop}"`` by one minus it."""

    def walk(node):
        if node == KEEP:
            return keep
        if node == DROP:
            return round(1.0 - keep, 9)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(json.loads(json.dumps(stages)))


def cells(grid: Grid) -> list[Cell]:
    """Every cell of ``grid``: per task, model and seed, the control, then each method at
    each operating point."""
    out = []
    for task in grid.tasks:
        for model in grid.models:
            for seed in grid.seeds:
                out.append(Cell(task, model, CONTROL, 1.0, seed))
                for method in grid.methods:
                    out += [Cell(task, model, method, k, seed) for k in grid.keep]
    return out


def cell_recipe(grid: Grid, cell: Cell, parent: str | Path) -> dict:
    """The recipe one ``cell`` of ``grid`` runs: the weights of its ``parent`` (a checkpoint
    path), the method's stages, an evaluation."""
    stages = [] if cell.method == CONTROL else substitute(grid.methods[cell.method], cell.keep)
    return {
        "task": task_spec(grid, cell.task),
        "seed": cell.seed,
        "target": grid.target,
        "model": {"checkpoint": str(parent)},
        "stages": [*stages, {"evaluate": {"name": "final"}}],
    }


def task_spec(grid: Grid, task: str) -> str | dict:
    """How a recipe names ``task``: its name, or its name with the grid's options for it."""
    args = grid.task_args.get(task)
    return {"name": task, **args} if args else task


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def parent_digest(grid: Grid, model: str, task: str | None = None) -> str:
    """What a parent depends on beyond (task, model, seed): its training and model spec,
    and the task's options where the grid gives some."""
    spec = {"train": grid.train, "model": grid.models[model].model_dump()}
    if task is not None and grid.task_args.get(task):
        spec["task_args"] = grid.task_args[task]
    return _digest(spec)


# stage defaults that changed after grids were run: (stage, argument, old default, what
# leaving it out means now). A cell's digest writes the new meaning where the argument is
# left out and drops it where it is set to the old default, so a resumed grid reruns the
# cells whose meaning changed and keeps those that ask for the old behaviour: a prune stage
# now re-estimates batch-norm statistics unless told not to (it kept them before)
CHANGED_DEFAULTS = [("prune", "recalibrate", False, "when data is given")]


def cell_digest(grid: Grid, cell: Cell) -> str:
    """What one ``cell`` of ``grid`` runs: its recipe (with the parent named by what it
    depends on), its
    stages' arguments read as ``CHANGED_DEFAULTS`` says."""
    parent = f"{'-'.join(map(str, cell.parent))}-{parent_digest(grid, cell.model, cell.task)}"
    recipe = cell_recipe(grid, cell, parent)
    for stage in recipe["stages"]:
        for kind, arg, old, now in CHANGED_DEFAULTS:
            args = stage.get(kind)
            if isinstance(args, dict):
                if arg not in args:
                    stage[kind] = {**args, arg: now}
                elif args[arg] == old:
                    stage[kind] = {k: v for k, v in args.items() if k != arg}
    return _digest(recipe)


def parse_grid(data: Any, *, source: str = "grid") -> Grid:
    """Validate grid ``data`` (from the file called ``source``); every method's stages are
    checked as a recipe would be."""
    if not isinstance(data, dict):
        raise RecipeError(
            source, [("", "a grid is a mapping with name, tasks, models, methods, keep")]
        )
    try:
        grid = Grid.model_validate(data)
    except ValidationError as err:
        raise RecipeError(source, _problems(err, data)) from None
    problems = []
    for label, stages in grid.methods.items():
        recipe = {
            "task": task_spec(grid, grid.tasks[0]),
            "model": next(iter(data["models"].values())),
            "stages": [{"train": grid.train}, *substitute(stages, grid.keep[0])],
        }
        try:
            parse_recipe(recipe, source=source)
        except RecipeError as err:
            for path, message in err.problems:
                if path.startswith("stages["):
                    i = int(path[len("stages[") : path.index("]")]) - 1
                    path = f"methods.{label}[{i}]{path[path.index(']') + 1 :]}"
                problems.append((path, message))
    if problems:
        raise RecipeError(source, problems)
    return grid


def load_grid(path: str | Path) -> Grid:
    """Read the grid file at ``path`` and validate it (:func:`parse_grid`)."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except FileNotFoundError:
        raise RecipeError(str(path), [("", "no such grid file")]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RecipeError(str(path), [("", f"cannot read it: {err}")]) from None
    return parse_grid(data, source=str(path))
