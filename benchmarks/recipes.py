"""Every shipped recipe (recipes/*.yaml), run as a user would run it, stage by stage.

For each recipe: accuracy, params, MACs, flash and peak SRAM after every stage, and for a
C export its arena, its lower bound and how many outputs differed from ``run_int8``. The
runs go to runs/bench-recipes/<name> and resume; the figures to
benchmarks/results/recipes.json, which docs/recipes.md quotes.

    python benchmarks/recipes.py [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _common import locked_update, machine

import secateurs as sc

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "recipes.json"
EXPORT_KEYS = ("arena_bytes", "arena_lower_bound", "mismatches", "verified_inputs")


def stage_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        prof = r["profile"]
        row = {
            "stage": r["name"],
            "accuracy": r["accuracy"],
            "params": prof["params"],
            "macs": prof["macs"],
            "flash_bytes": r["flash_bytes"],
            "peak_sram_bytes": prof["peak_sram_bytes"],
            "wall_s": r["wall_s"],
        }
        row.update({k: r["details"][k] for k in EXPORT_KEYS if k in r["details"]})
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipe names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    paths = sorted((ROOT / "recipes").glob("*.yaml"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names]
    for path in paths:
        result = sc.recipe.run(path, ROOT / "runs" / "bench-recipes" / path.stem, resume=True)
        rows = stage_rows(result.records)
        print(f"\n{path.stem}")
        for row in rows:
            print(
                f"  {row['stage']:12s} {100 * row['accuracy']:6.2f}%  params {row['params']:>8,}"
                f"  MACs {row['macs']:>9,}  flash {row['flash_bytes'] / 1024:7.1f} KiB"
                f"  SRAM {row['peak_sram_bytes'] / 1024:6.1f} KiB"
            )

        def update(results, name=path.stem, rows=rows):
            results.update(
                {
                    "benchmark": "recipes",
                    "machine": machine(),
                    "command": "python benchmarks/recipes.py",
                }
            )
            results.setdefault("recipes", {})[name] = rows

        locked_update(RESULTS, update)
    return 0


if __name__ == "__main__":
    sys.exit(main())
