"""Recipes: the whole flow declared in YAML and run stage by stage, resumable, with a report.

result = sc.recipe.run("recipes/demo.yaml", out="runs/demo")
"""

from __future__ import annotations

from .report import stage_rows, write_report
from .runner import RunResult, measure_state, run
from .schema import STAGE_KINDS, Recipe, RecipeError, Stage, load_recipe, parse_recipe
from .stages import STAGES, Context
from .state import RunState, build_model, load_state, save_state

__all__ = [
    "STAGES",
    "STAGE_KINDS",
    "Context",
    "Recipe",
    "RecipeError",
    "RunResult",
    "RunState",
    "Stage",
    "build_model",
    "load_recipe",
    "load_state",
    "measure_state",
    "parse_recipe",
    "run",
    "save_state",
    "stage_rows",
    "write_report",
]
