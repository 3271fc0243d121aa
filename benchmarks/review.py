"""The review grid: every method family on digits, MNIST-1D and KWS (benchmarks/grids/review.yaml).

``--real`` runs the same methods, operating points and seeds on the real-data tasks
instead (``REAL`` below): Fashion-MNIST on a stratified 6,000-image slice of its training
set (a tenth: DS-CNN trains at about 10 s an epoch on it, so its 351 cells take hours, not
days), the smartwatch IMU windows and the spoken digits whole. Its store, report and summary
are separate: runs/review-real/, docs/results/review-real/, benchmarks/results/review_real.json.

Runs the grid's cells not yet in the store (on a process pool), then publishes: the
store's cells as JSON lines and the report under docs/results/review/, and a summary in
benchmarks/results/review.json: per task and operating point, each method's mean test
accuracy and its rank, the winner and its margin over the runner-up and over L1 and
random pruning. Where the store does not exist yet (a new clone), it starts from the
published cells (docs/results/review/cells.jsonl): only cells they lack run, and each
parent trained again must score as its published control cell.

    python benchmarks/review.py [--seeds 0 1 2] [--store runs/review/review.sqlite]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from scipy.stats import rankdata

import secateurs as sc

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, save_json

ROOT = Path(__file__).parents[1]
GRID = ROOT / "benchmarks" / "grids" / "review.yaml"
OUT = ROOT / "docs" / "results" / "review"
RESULTS = ROOT / "benchmarks" / "results" / "review.json"
REAL = {  # --real: the tasks that replace digits, MNIST-1D and KWS, cheapest first
    "name": "review-real",
    "tasks": ["watch_imu", "spoken_digits", "fashion_mnist"],
    "task_args": {"fashion_mnist": {"train_size": 6000}},
}


def summarize(rows: list[dict], seeds: int) -> dict:
    """Winners, margins and mean ranks among the methods done on all ``seeds`` seeds of a
    point; a method with fewer so far is listed under ``partial`` with its seed count."""
    table = sc.bench.aggregate(rows)
    by_point: dict[tuple, dict[str, dict]] = defaultdict(dict)
    control, instructions, partial = {}, {}, {}
    for (task, _model, method, keep), s in table.items():
        if method == sc.bench.CONTROL:
            control[task] = {
                "accuracy": round(100 * s["accuracy"], 2),
                "std": round(100 * s["accuracy_std"], 2),
                "seeds": s["seeds"],
                "macs": s["macs"],
                "flash_bytes": s["flash_bytes"],
            }
        elif s["seeds"] < seeds:
            partial.setdefault(f"{task}/{keep:g}", {})[method] = {
                "accuracy": round(100 * s["accuracy"], 2),
                "seeds": s["seeds"],
            }
        else:
            by_point[(task, keep)][method] = s
        if "instructions" in s:
            instructions[f"{task}/{method}/{keep:g}"] = {
                "instructions": round(s["instructions"]),
                "macs": s["macs"],
                "cortex_m4_ms": round(s["target_latency_ms"], 2),
            }
    summary, wins = {}, defaultdict(int)
    for (task, keep), methods in sorted(by_point.items(), key=lambda e: (e[0][0], -e[0][1])):
        ranked = sorted(methods, key=lambda m: -methods[m]["accuracy"])
        best, second = ranked[0], ranked[1]
        wins[(task, best)] += 1
        acc = {m: round(100 * methods[m]["accuracy"], 2) for m in ranked}
        summary[f"{task}/{keep:g}"] = {
            "accuracy": acc,
            "seeds": min(methods[m]["seeds"] for m in ranked),
            "winner": best,
            "margin_over_second": round(acc[best] - acc[second], 2),
            "margin_over_l1": round(acc[best] - acc.get("l1", float("nan")), 2),
            "margin_over_random": round(acc[best] - acc.get("random", float("nan")), 2),
        }
        print(
            f"{task:8s} keep {keep:<7g} {best:16s} {acc[best]:5.1f}  "
            f"+{acc[best] - acc[second]:.1f} over {second}, "
            f"{acc[best] - acc.get('l1', 0):+.1f} over l1, "
            f"{acc[best] - acc.get('random', 0):+.1f} over random"
        )
    tasks = sorted({t for t, _ in wins})
    mean_rank = {}
    for task in tasks:
        ranks = defaultdict(list)
        for (t, _), methods in by_point.items():
            if t == task:  # tied methods share the mean of their places, whatever the order
                names = list(methods)
                places = rankdata([-methods[m]["accuracy"] for m in names], method="average")
                for m, place in zip(names, places):
                    ranks[m].append(float(place))
        mean_rank[task] = {m: round(statistics.mean(r), 2) for m, r in sorted(ranks.items())}
    return {
        "control": control,
        "points": summary,
        "wins": {f"{t}/{m}": n for (t, m), n in sorted(wins.items())},
        "mean_rank": mean_rank,
        "c_instructions": instructions,
        "partial": partial,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--store", help="default: runs/review[-real]/review.sqlite")
    parser.add_argument("--no-run", action="store_true", help="only publish what is stored")
    parser.add_argument("--real", action="store_true", help="the real-data tasks (REAL)")
    args = parser.parse_args(argv)
    grid = yaml.safe_load(GRID.read_text()) | {"seeds": args.seeds}
    out, results, runs = OUT, RESULTS, ROOT / "runs" / "review"
    if args.real:
        grid |= REAL
        out, results = OUT.with_name("review-real"), RESULTS.with_name("review_real.json")
        runs = runs.with_name("review-real")
    args.store = args.store or str(runs / "review.sqlite")
    fresh = not Path(args.store).is_file()
    store = sc.bench.Store(args.store)
    if not args.no_run:
        if fresh and (out / "cells.jsonl").is_file():  # a new clone: run what is not published
            added = store.import_cells(out / "cells.jsonl")
            print(f"no store at {args.store}: {added} published cell(s) imported into it")
        sc.bench.run_grid(grid, args.store, backend="process")
    sc.bench.write_bench_report(args.store, out)
    rows = [r for r in store.rows("done") if r["seed"] in args.seeds]
    result = {
        "benchmark": grid["name"],
        "machine": machine(),
        "command": f"python benchmarks/review.py --seeds {' '.join(map(str, args.seeds))}"
        + (" --real" if args.real else ""),
        "cells_done": len(rows),
        **summarize(rows, len(args.seeds)),
    }
    save_json(results, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
