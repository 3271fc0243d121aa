"""The ``secateurs`` command: list, train, profile, compress, run, bench, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from pickle import UnpicklingError
from zipfile import BadZipFile

import yaml
from rich.console import Console
from rich.table import Table

from . import bench, data, measure, models, recipe, search
from .models.checkpoint import load_checkpoint, load_weights, save_checkpoint
from .train import RichProgress, evaluate, fit


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _profile_table(title: str, rows: list[tuple[str, float | None, measure.Profile]]) -> Table:
    table = Table(title=title)
    for col in ("model", "accuracy", "params", "MACs", "flash", "peak SRAM", "latency"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, acc, p in rows:
        table.add_row(
            label,
            "-" if acc is None else f"{acc:.2%}",
            f"{p.params:,}",
            f"{p.macs:,}",
            _kib(p.flash_bytes),
            _kib(p.peak_sram_bytes),
            "-" if p.latency_ms is None else f"{p.latency_ms:.3f} ms",
        )
    return table


def _layer_table(p: measure.Profile) -> Table:
    table = Table(title="per layer")
    for col in ("module", "op", "output", "weights", "MACs", "out bytes", "live bytes"):
        table.add_column(col, justify="left" if col in ("module", "op") else "right")
    for r in p.layers:
        if r.output_bytes == 0 and r.macs == 0:
            continue  # views and in-place ops hold no new memory and compute nothing
        table.add_row(
            r.module or "(top)",
            r.op,
            "x".join(map(str, r.output_shape)),
            f"{r.weights:,}",
            f"{r.macs:,}",
            f"{r.output_bytes:,}",
            f"{r.live_bytes:,}",
        )
    return table


def _model_kwargs(args) -> dict:
    try:
        kwargs = json.loads(args.model_args) if args.model_args else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-args must be a JSON object: {err}") from None
    if not isinstance(kwargs, dict):
        raise ValueError("--model-args must be a JSON object, such as '{\"hidden\": [64]}'")
    return kwargs


def _registry_table(title: str, registry) -> Table:
    """Each registered name with the first line of its docstring."""
    table = Table(title=title)
    table.add_column("name")
    table.add_column("description")
    for name in registry.names():
        doc = (registry.get(name).__doc__ or "").strip().splitlines()
        table.add_row(name, doc[0] if doc else "")
    return table


def cmd_list(args, console: Console) -> int:
    if args.what in ("all", "tasks"):
        console.print(_registry_table("tasks", data.TASKS))
    if args.what in ("all", "models"):
        console.print(_registry_table("models", models.MODELS))
    return 0


def cmd_train(args, console: Console) -> int:
    task = data.load(args.task, seed=args.seed)
    kwargs = _model_kwargs(args)
    model = models.create(args.model, task, width=args.width, seed=args.seed, **kwargs)
    fit(
        model,
        task,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=RichProgress(f"{args.model} on {task.name}", console=console),
    )
    acc = evaluate(model, task)
    prof = measure.profile(model, task.example_inputs())
    console.print(_profile_table(f"{args.model} on {task.name}", [(args.model, acc, prof)]))
    if args.out:
        save_checkpoint(model, args.out, args.model, task, width=args.width, **kwargs)
        console.print(f"saved {args.out}")
    return 0


def cmd_profile(args, console: Console) -> int:
    task = data.load(args.task, seed=args.seed)
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint, task)
        label = meta["model"]
        acc = evaluate(model, task)
    else:
        kwargs = _model_kwargs(args)
        model = models.create(args.model, task, width=args.width, seed=args.seed, **kwargs)
        label, acc = args.model, None
    prof = measure.profile(
        model,
        task.example_inputs(),
        weight_bits=args.weight_bits,
        activation_bits=args.activation_bits,
    )
    if args.json:
        console.print_json(json.dumps(prof.to_dict(layers=args.layers)))
        return 0
    console.print(_profile_table(f"{label} on {task.name}", [(label, acc, prof)]))
    if args.layers:
        console.print(_layer_table(prof))
    return 0


def _limit(text: str):
    """--macs: '0.5' or '50%' is a share of the model's MACs, '200000' absolute."""
    if text.strip().endswith("%"):
        return text.strip()  # sc.search.Budget reads percentages
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--macs must be a number, got {text!r}") from None
    return value if value <= 1 else int(value)


def cmd_compress(args, console: Console) -> int:
    from .compression import compress

    task = data.load(args.data, seed=args.seed)
    kwargs = _model_kwargs(args)
    if ":" in args.model:
        model = models.from_import(args.model, seed=args.seed, **kwargs)
    else:
        model = models.create(args.model, task, width=args.width, seed=args.seed, **kwargs)
    if args.checkpoint:
        load_weights(model, args.checkpoint, what="--checkpoint")
    elif args.train_epochs:
        fit(
            model,
            task,
            epochs=args.train_epochs,
            seed=args.seed,
            progress=RichProgress("training the model first", console=console),
        )
    else:
        raise ValueError(
            "the model must be trained: give --checkpoint, or --train-epochs N "
            "to train it on --data first"
        )
    result = compress(
        model,
        task,
        target=args.target,
        flash=args.flash,
        sram=args.sram,
        macs=_limit(args.macs) if args.macs else None,
        latency_ms=args.latency_ms,
        max_accuracy_drop=args.max_drop,
        method=args.method,
        out=args.out,
        finetune_epochs=args.epochs,
        qat_epochs=args.qat_epochs,
        tflite=args.tflite,
        seed=args.seed,
    )
    table = Table(title=f"{args.model} on {task.name} for {result.target}")
    for col in ("", "accuracy", "flash", "SRAM", "MACs"):
        table.add_column(col, justify="left" if not col else "right")
    o, c = result.original_costs, result.costs
    table.add_row(
        "original",
        f"{result.accuracy_before:.2%}",
        _kib(o["flash_bytes"]),
        _kib(o["sram_bytes"]),
        f"{o['macs']:,.0f}",
    )
    table.add_row(
        f"compressed ({result.method}, {result.quantization})",
        f"{result.accuracy_int8:.2%}",
        _kib(c["flash_bytes"]),
        _kib(c["sram_bytes"]),
        f"{c['macs']:,.0f}",
    )
    table.add_row(
        "limits",
        f"-{args.max_drop:.2%}" if args.max_drop is not None else "",
        *(_kib(result.limits[m]) for m in ("flash_bytes", "sram_bytes")),
        f"{result.limits['macs']:,.0f}" if "macs" in result.limits else "",
    )
    console.print(table)
    if "latency_ms" in c:
        console.print(f"estimated latency on {result.target}: {c['latency_ms']:.3f} ms")
    for problem in result.problems:
        console.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)
    if args.out:
        console.print(f"C build (verified on the host) and summary in {args.out}")
    return 0 if result.ok else 1


def _overrides(items: Sequence[str]) -> dict:
    """``--set stages[0].train.epochs=1`` pairs; values are read as YAML (1, 0.5, true, l1)."""
    out = {}
    for item in items:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise ValueError(
                f"--set takes PATH=VALUE, such as stages[0].train.epochs=1; got {item!r}"
            )
        out[path.strip()] = yaml.safe_load(value)
    return out


SHOWN = ("stage", "accuracy", "params", "MACs", "flash", "peak SRAM")


def _stage_table(title: str, records: list[dict]) -> Table:
    """The report's table, narrowed to what fits a terminal (report.md has every column)."""
    table = Table(title=title)
    columns = [recipe.report.COLUMNS.index(c) for c in SHOWN]
    for col in SHOWN:
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in recipe.stage_rows(records):
        table.add_row(*(row[i] for i in columns))
    return table


def _run_recipe(path, out, resume: bool, sets: Sequence[str], console: Console) -> int:
    try:
        result = recipe.run(path, out, resume=resume, overrides=_overrides(sets), console=console)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]; continue with --resume --out {out}")
        return 130
    console.print(_stage_table(f"{Path(path).name}: the model after each stage", result.records))
    console.print(f"report: {Path(out) / 'report.html'} and {Path(out) / 'report.md'}")
    return 0


def cmd_run(args, console: Console) -> int:
    return _run_recipe(args.recipe, args.out, args.resume, args.set, console)


def demo_recipe() -> Path:
    """recipes/demo.yaml of the source tree this package runs from."""
    path = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"the demo recipe {path} is missing; run the demo from a secateurs source checkout "
            "(`make demo`), or `secateurs run` a recipe of your own"
        )
    return path


def cmd_demo(args, console: Console) -> int:
    start = time.perf_counter()
    code = _run_recipe(demo_recipe(), args.out, True, args.set, console)
    console.print(f"demo done in {time.perf_counter() - start:.1f} s")
    return code


def cmd_bench(args, console: Console) -> int:
    if args.action == "run" and not args.grid:
        raise ValueError("bench run needs the grid file: secateurs bench run GRID --store S")
    if args.action == "report" and not args.out:
        raise ValueError("bench report needs --out DIR for the report")
    if args.action == "import":
        if not args.grid:
            raise ValueError(
                "bench import needs the cells file: secateurs bench import CELLS.jsonl --store S"
            )
        added = bench.Store(args.store).import_cells(args.grid)
        console.print(f"{added} cell(s) added to {args.store}; the ones it held are unchanged")
        return 0
    if args.action == "run":
        try:
            runner = search.RayBackend(args.address) if args.backend == "ray" else args.backend
            try:
                done = bench.run_grid(
                    args.grid,
                    args.store,
                    root=args.root or None,
                    backend=runner,
                    console=console,
                    rerun=args.rerun,
                    retry_failed=args.retry_failed,
                )
            finally:
                if args.backend == "ray":
                    runner.close()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]; run the same command again to go on")
            return 130
        console.print(
            f"{done.ran} cell(s) run ({done.failed} failed), {done.skipped} done "
            f"already; results in {args.store}"
        )
        for key, error in done.exhausted.items():
            console.print(
                f"[red]not done[/red] {key}: out of attempts; last error: "
                f"{error.strip().splitlines()[-1][:200] if error.strip() else '?'}",
                highlight=False,
            )
        if done.exhausted:
            console.print(
                f"{len(done.exhausted)} cell(s) out of attempts: fix the cause, then "
                "run again with --retry-failed"
            )
        return 0 if done.complete else 1
    md, page = bench.write_bench_report(args.store, args.out)
    console.print(f"report: {page} and {md}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secateurs",
        description="Compress PyTorch models until they fit a microcontroller, and prove it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list tasks and models", description="List tasks and models.")
    p.add_argument("what", nargs="?", default="all", choices=("all", "tasks", "models"))
    p.set_defaults(func=cmd_list)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", default="digits", help="task name or .npz/folder path")
        p.add_argument("--model", default="lenet5", help="zoo model name (see `secateurs list`)")
        p.add_argument("--width", type=float, default=1.0, help="width multiplier")
        p.add_argument("--model-args", default="", help="extra builder arguments as JSON")
        p.add_argument("--seed", type=int, default=0, help="fixes data split, init and order")

    p = sub.add_parser("train", help="train a zoo model", description="Train a zoo model.")
    model_options(p)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="", help="save a checkpoint to this path")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "profile",
        help="params, MACs, flash, SRAM and latency of a model",
        description="Profile a zoo model or a checkpoint saved by `secateurs train`.",
    )
    model_options(p)
    p.add_argument("--checkpoint", default="", help="checkpoint from `secateurs train --out`")
    p.add_argument("--weight-bits", type=int, default=32)
    p.add_argument("--activation-bits", type=int, default=32)
    p.add_argument("--layers", action="store_true", help="also print the per-layer table")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "compress",
        help="compress a trained model until its int8 C fits a target",
        description="Prune (searching the per-layer widths), fine-tune, "
        "quantize and export a trained model until its C fits --target and the limits; "
        "write the verified C build into --out. A user's model: --model package.module:build.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="a zoo model name, or package.module:build (a class or a function "
        "returning an nn.Module; the current folder is importable)",
    )
    p.add_argument("--model-args", default="", help="the builder's arguments as JSON")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (zoo models)")
    p.add_argument("--checkpoint", default="", help="trained weights (a state dict)")
    p.add_argument(
        "--train-epochs",
        type=int,
        default=0,
        help="without --checkpoint: train the model on --data first",
    )
    p.add_argument(
        "--data",
        required=True,
        help="an .npz (x_train, y_train, x_test, y_test), an image folder or a task name",
    )
    p.add_argument("--target", default="cortex-m4", help="cortex-m0plus, cortex-m4, cortex-m7")
    p.add_argument("--flash", default=None, help="flash limit, such as 64KiB (default: target's)")
    p.add_argument("--sram", default=None, help="SRAM limit, such as 16KiB (default: target's)")
    p.add_argument(
        "--macs", default="", help="MAC limit: 0.5 or 50%% is half the model's, 200000 absolute"
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="latency limit on the target (from the C's instructions)",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=None,
        help="largest accuracy drop allowed (0.01: one point); keeps the smallest model within it",
    )
    p.add_argument("--method", default="auto", help="the width search (sc.search.METHODS)")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs per candidate")
    p.add_argument("--qat-epochs", type=int, default=3)
    p.add_argument("--tflite", action="store_true", help="also write model.tflite")
    p.add_argument("--out", default="", help="the build folder (C, model.pt, compress.json)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_compress)

    def override_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="PATH=VALUE",
            help="override a recipe key, such as stages[0].train.epochs=1",
        )

    p = sub.add_parser(
        "run",
        help="run a recipe (YAML): train, prune, distill, quantize, export",
        description="Run a recipe stage by stage into --out, with a checkpoint and a metrics "
        "line after each stage and a report at the end.",
    )
    p.add_argument("recipe", help="the recipe file (see recipes/ and docs/recipes.md)")
    p.add_argument("--out", required=True, help="the run folder, such as runs/x")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    override_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "bench",
        help="run a benchmark grid into a result store, or report on one",
        description="`bench run GRID --store S`: every cell of the grid not done yet; "
        "`bench report --store S --out DIR`: Pareto plots and a leaderboard; "
        "`bench import CELLS.jsonl --store S`: the cells a report published (cells.jsonl), "
        "so that a run adds only what they lack.",
    )
    p.add_argument("action", choices=("run", "report", "import"))
    p.add_argument(
        "grid",
        nargs="?",
        default="",
        metavar="FILE",
        help="the grid file (run) or the cells file (import)",
    )
    p.add_argument("--store", required=True, help="the SQLite result store")
    p.add_argument("--root", default="", help="parents and cell runs (default: beside store)")
    p.add_argument("--backend", default="serial", choices=("serial", "process", "ray"))
    p.add_argument(
        "--address", default="local", help="for --backend ray: local, auto, or ray://host:port"
    )
    p.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="METHOD",
        help="run this method's cells again even if done (after a code change; repeatable)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="give the cells whose attempts ran out their attempts back",
    )
    p.add_argument("--out", default="", help="the report folder (for report)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "demo",
        help="run recipes/demo.yaml into runs/demo and print its table",
        description="Train a small MobileNet V2 on digits, prune it to half its MACs, distill, "
        "train it for int8, export C and verify it: recipes/demo.yaml. Runs again resume.",
    )
    p.add_argument("--out", default="runs/demo", help="the run folder (default runs/demo)")
    override_option(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = console or Console()
    try:
        return args.func(args, console)
    except (
        ValueError,
        TypeError,
        OSError,
        RuntimeError,
        ArithmeticError,
        BadZipFile,
        UnpicklingError,
    ) as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
