"""The recipe runner: stages in order, a checkpoint and a metrics line after each, resume.

The run folder holds ``run.json`` (the validated recipe), ``recipe.yaml`` (the same, for
people), ``checkpoints/NN-<stage>.pt``, ``metrics.jsonl`` (one line per finished stage:
accuracy, the full Profile, the stage's details), ``report.md``/``report.html`` and the
exports. Every file is written atomically; a stage counts as finished once its metrics line
is written, after its checkpoint, so an interrupt at any moment loses at most the stage
that was running, and ``resume=True`` continues from the last finished one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from torch import nn

from .. import data
from .._io import write_atomic
from ..measure import profile
from ..measure.target import get_target
from ..quant import QuantizedModel
from ..train import evaluate
from .report import write_report
from .schema import START, Recipe, Stage, load_recipe, parse_recipe
from .stages import STAGES, Context
from .state import RunState, build_model, load_state, save_state

RUN_FORMAT = "secateurs.runfolder/1"


@dataclass
class RunResult:
    """A finished run: its folder, one metrics record per stage, and the final models."""

    out: Path
    records: list[dict] = field(repr=False)
    state: RunState = field(repr=False)

    @property
    def model(self) -> nn.Module:
        """The final float model (pruned, masked)."""
        return self.state.model

    @property
    def qmodel(self) -> QuantizedModel | None:
        """The final int8 model, when the recipe quantized."""
        return self.state.qmodel

    @property
    def final(self) -> dict:
        return self.records[-1]


def _finite(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def measure_state(state: RunState, task) -> dict:
    """Accuracy of ``state``'s model on the test split of ``task`` and its Profile: float
    costs for a float model; for an
    int8 one, costs at its weight bits and 8-bit activations, and the bytes it stores."""
    x = task.example_inputs()
    if state.qmodel is None:
        prof = profile(state.model, x)
        flash = prof.flash_bytes
    else:
        assert state.quant is not None  # recorded with the quantized model
        bits = state.quant["args"].get("weight_bits", 8)
        prof = profile(
            state.model,
            x,
            weight_bits=bits if isinstance(bits, int) else 8,
            activation_bits=8,
            latency=False,
        )
        flash = state.qmodel.flash_bytes()
    return {
        "accuracy": evaluate(state.current, task),
        "quantized": state.qmodel is not None,
        "flash_bytes": flash,
        "profile": prof.to_dict(layers=True),
    }


def _read_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n} is not JSON; the run folder is damaged") from None
    return records


def _checkpoint(out: Path, index: int, stage: Stage) -> Path:
    return out / "checkpoints" / f"{index + 1:02d}-{stage.name}.pt"


def _prepare(out: Path, recipe: Recipe, source: str, resume: bool) -> bool:
    """Check or create the run folder; True when this call created it."""
    meta = out / "run.json"
    if meta.is_file():
        saved = json.loads(meta.read_text())
        if not resume:
            raise FileExistsError(
                f"{out} already holds a run; pass resume=True (--resume) to continue it, "
                "or choose another output folder"
            )
        if saved.get("recipe") != json.loads(recipe.digest()):
            raise ValueError(
                f"{out} holds a run of a different recipe ({saved.get('source')}); resume it "
                "with that recipe, or choose another output folder"
            )
        return False
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a run folder; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out / "recipe.yaml",
        yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False),
    )
    write_atomic(
        meta,
        json.dumps(
            {"format": RUN_FORMAT, "source": source, "recipe": json.loads(recipe.digest())},
            indent=1,
        ),
    )
    return True


def run(
    recipe: str | Path | Mapping,
    out: str | Path,
    *,
    resume: bool = False,
    overrides: Mapping[str, Any] | None = None,
    console: Console | None = None,
) -> RunResult:
    """Run ``recipe`` (a YAML path, or the mapping ``yaml.safe_load`` gives) into ``out``.

    ``overrides`` set keys by YAML path before validation, e.g.
    ``{"stages[0].train.epochs": 1}``. ``resume=True`` continues a run in ``out`` from its
    last finished stage (the recipe must be the same). ``console`` shows progress bars.
    """
    if isinstance(recipe, Mapping):
        source = "recipe"
        parsed, stages = parse_recipe(recipe, source=source, overrides=overrides)
    else:
        source = str(recipe)
        parsed, stages = load_recipe(recipe, overrides=overrides)
    out = Path(out)
    created = _prepare(out, parsed, source, resume)
    try:
        return _run(parsed, stages, out, console)
    except Exception as err:
        finished = (out / "metrics.jsonl").is_file()
        if created and not finished:  # nothing worth keeping: the fixed recipe may reuse out
            shutil.rmtree(out, ignore_errors=True)
        stage = getattr(err, "recipe_stage", None)
        if stage is None or not isinstance(
            err, (ValueError, TypeError, RuntimeError, ArithmeticError)
        ):
            raise
        try:
            named = type(err)(f"{stage}: {err}")
        except Exception:
            raise err from None
        raise named from err


def _run(parsed: Recipe, stages: list[Stage], out: Path, console: Console | None) -> RunResult:
    task = data.load(parsed.task, seed=parsed.seed, **parsed.task_args)
    target = get_target(parsed.target)

    metrics = out / "metrics.jsonl"
    records = _read_records(metrics)
    done = 0
    for record, stage in zip(records, stages):
        if record.get("name") != stage.name or not _checkpoint(out, done, stage).is_file():
            break
        done += 1
    state = None
    while done and state is None:  # a damaged checkpoint: run its stage again
        path = _checkpoint(out, done - 1, stages[done - 1])
        try:
            state = load_state(path, task)
        except (ValueError, RuntimeError, KeyError, OSError) as err:
            if console is not None:
                console.print(
                    f"[yellow]{path} cannot be loaded[/yellow] ({str(err)[:200]}); "
                    f"running stage {done} ({stages[done - 1].name}) again"
                )
            path.unlink(missing_ok=True)
            done -= 1
    records = records[:done]
    if state is None:
        state = build_model(parsed.model, task, parsed.seed)
    teachers: dict[str, nn.Module] = {}

    def teacher(name: str) -> nn.Module:
        if name not in teachers:
            if name == START:
                teachers[name] = build_model(parsed.model, task, parsed.seed).model
            else:
                index = next(i for i, s in enumerate(stages) if s.name == name)
                teachers[name] = load_state(_checkpoint(out, index, stages[index]), task).model
            teachers[name].eval()
        return teachers[name]

    ctx = Context(task, parsed.seed, out, teacher, console, target)
    if console is not None and done == len(stages):
        console.print(f"{out} holds this recipe's finished run; reporting it")
    elif console is not None and done:
        console.print(f"resuming {out} after stage {done}/{len(stages)} ({stages[done - 1].name})")
    for i in range(done, len(stages)):
        stage = stages[i]
        if console is not None:
            console.rule(f"[bold]{i + 1}/{len(stages)}  {stage.name}[/bold] ({stage.kind})")
        start = time.perf_counter()
        try:
            details = STAGES.get(stage.kind)(state, stage, ctx)
        except Exception as err:  # tagged with its YAML path, for the message
            err.recipe_stage = f"stages[{i}].{stage.kind}"  # type: ignore[attr-defined]
            raise
        state.model.eval()
        record = {"stage": i + 1, "name": stage.name, "kind": stage.kind}
        record.update(measure_state(state, task))
        record["details"] = details
        record["wall_s"] = time.perf_counter() - start
        save_state(state, _checkpoint(out, i, stage), i + 1, stage.name)
        records.append(_finite(record))
        write_atomic(metrics, "".join(json.dumps(r) + "\n" for r in records))
        if console is not None:
            console.print(_summary(records[-1]))
    write_report(out, parsed, records, target)
    return RunResult(out, records, state)


def _summary(r: dict) -> str:
    p = r["profile"]
    flash, sram = r["flash_bytes"] / 1024, p["peak_sram_bytes"] / 1024
    return (
        f"accuracy {r['accuracy']:.2%}  params {p['params']:,}  MACs {p['macs']:,}  "
        f"flash {flash:,.1f} KiB  peak SRAM {sram:,.1f} KiB"
    )
