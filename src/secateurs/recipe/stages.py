"""The stages a recipe can list: each calls the library's own Python function.

A stage function takes the run state, the validated stage and the run context, changes the
state in place, and returns the details worth recording (a prune report's kept MACs, the
C export's arena bytes...). Register another with ``@STAGES.register("kind")`` and a schema
class in ``schema.STAGE_KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from .._registry import Registry
from ..compression import compress
from ..data.task import Task
from ..deploy import estimate_c, export_c, export_onnx, export_tflite, verify_c
from ..distill import KD, distill
from ..measure.target import Target
from ..prune import (
    L1,
    L2,
    ElasticNet,
    GroupLasso,
    SmoothL12,
    SparsitySchedule,
    channels,
    layers,
    sparsify,
    sparsity_report,
)
from ..quant import QuantizationGuided, convert, prepare_qat, quantize
from ..search import METHODS as SEARCHES
from ..search import Budget
from ..train import RichProgress, evaluate, fit
from .schema import FIT_KEYS, Stage
from .state import RunState, ptq_record, qat_record

STAGES: Registry[Callable[..., dict]] = Registry("recipe stage")


@dataclass
class Context:
    """What every stage may use besides the state: the task, seed, run folder, the
    teachers by stage name, and where to show progress."""

    task: Task
    seed: int
    out: Path
    teacher: Callable[[str], nn.Module]
    console: Console | None = None
    target: Target | None = None  # the recipe's target

    def progress(self, label: str):
        return RichProgress(label, console=self.console) if self.console is not None else False

    def fit(self, model: nn.Module, stage: Stage, label: str, **kwargs) -> dict:
        history = fit(
            model,
            self.task,
            **stage.args.fit_kwargs(),
            seed=self.seed,
            progress=self.progress(label),
            **kwargs,
        )
        return _trained(history)


def _trained(history) -> dict:
    return {"epochs": len(history), "final_val_acc": history.final_val_acc}


@STAGES.register("train")
def train_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    return ctx.fit(state.model, stage, f"{stage.name}: training")


@STAGES.register("finetune")
def finetune_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    return ctx.fit(state.model, stage, f"{stage.name}: fine-tuning")


def _regularizer(args, example) -> Any:
    kw = args.kwargs()
    options = {k: kw[k] for k in ("weight", "target", "l1_ratio", "a") if k in kw}
    if args.regularizer == "group_lasso":
        return GroupLasso(example, **options)
    return {"l1": L1, "l2": L2, "elastic_net": ElasticNet, "smooth_l12": SmoothL12}[
        args.regularizer
    ](**options)


@STAGES.register("regularize")
def regularize_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    term = _regularizer(stage.args, ctx.task.example_inputs())
    return ctx.fit(state.model, stage, f"{stage.name}: {stage.args.regularizer}", losses=[term])


@STAGES.register("prune")
def prune_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    report = channels(
        state.model, ctx.task.example_inputs(), **stage.args.kwargs(), data=ctx.task, seed=ctx.seed
    )
    return {
        "macs_kept": report.macs_kept,
        "params_kept": report.params_kept,
        "channels_removed": sum(len(g.removed) for g in report.groups),
    }


@STAGES.register("prune_layers")
def prune_layers_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    report = layers(state.model, ctx.task.example_inputs(), **stage.args.kwargs(), data=ctx.task)
    return {
        "macs_kept": report.macs_kept,
        "params_kept": report.params_kept,
        "layers_removed": list(report.removed),
    }


@STAGES.register("search")
def search_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    a = stage.args
    spec = a.budget.model_dump(exclude_unset=True)
    target = spec.pop("target", None)
    budget = Budget.for_target(target, **spec) if target else Budget(**spec)
    result = SEARCHES[a.method](
        state.model,
        ctx.task,
        budget,
        seed=ctx.seed,
        progress=ctx.console is not None,
        **a.kwargs("method", "budget", "options"),
        **a.options,
    )
    return {
        "fits": result.fits,
        "search_accuracy": result.accuracy,
        "evaluations": result.evaluations,
        "structure": result.structure,
        "limits": result.limits,
    }


@STAGES.register("sparsify")
def sparsify_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    a = stage.args
    kw = {k: v for k, v in a.kwargs("ramp", "steps", "sparsity").items() if k not in FIT_KEYS}
    details: dict[str, Any] = {}
    if not a.epochs:
        sparsify(state.model, sparsity=a.sparsity, **kw, data=ctx.task, seed=ctx.seed)
    else:
        kw.update(data=ctx.task, seed=ctx.seed)
        if a.ramp == "one_shot":
            schedule = SparsitySchedule.one_shot(a.sparsity, **kw)
        elif a.ramp == "iterative":
            steps = a.steps or 1
            schedule = SparsitySchedule.iterative(
                a.sparsity, steps, every=max(1, a.epochs // steps), **kw
            )
        else:
            schedule = SparsitySchedule.gradual(0.0, a.sparsity, epochs=a.epochs - 1, **kw)
        details = ctx.fit(state.model, stage, f"{stage.name}: sparsifying", callbacks=[schedule])
        details["applied"] = [list(step) for step in schedule.applied]
    details["sparsity"] = sparsity_report(state.model).sparsity
    return details


@STAGES.register("distill")
def distill_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    a = stage.args
    teacher = ctx.teacher(stage.teacher)
    kw = a.kwargs("teacher")
    history = distill(
        state.model,
        teacher,
        ctx.task,
        **kw,
        seed=ctx.seed,
        progress=ctx.progress(f"{stage.name}: {a.method or 'kd'} from {stage.teacher}"),
    )
    return _trained(history)


PTQ_KEYS = ("scheme", "calibration", "num_batches", "weight_bits", "rounding")
QAT_KEYS = ("scheme", "calibration", "num_batches", "weight_bits", "lsq")


@STAGES.register("quantize")
def quantize_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    a = stage.args
    kw = a.kwargs()
    details: dict[str, Any] = {}
    if a.method == "qat":
        args = {k: kw[k] for k in QAT_KEYS if k in kw}
        if "range_momentum" in kw:
            args["momentum"] = kw["range_momentum"]
        qat = prepare_qat(state.model, ctx.task, **args)
        losses, teacher = [], None
        if a.teacher is not None:
            teacher = ctx.teacher(a.teacher)
            losses = [KD(**{k: kw[k] for k in ("alpha", "temperature") if k in kw})]
        details = ctx.fit(
            qat, stage, f"{stage.name}: quantization-aware training", losses=losses, teacher=teacher
        )
        state.qmodel = convert(qat)
        state.quant = qat_record(qat, args)
    else:
        args = {k: kw[k] for k in PTQ_KEYS if k in kw}
        if a.method == "qgt":
            term = QuantizationGuided(**{k: kw[k] for k in ("bits", "weight") if k in kw})
            details = ctx.fit(
                state.model, stage, f"{stage.name}: quantization-guided training", losses=[term]
            )
            args["weight_bits"] = term.bits
        state.qmodel = quantize(state.model, ctx.task, **args)
        state.quant = ptq_record(a.method, args)
    details["int_flash_bytes"] = state.qmodel.flash_bytes()
    return details


@STAGES.register("compress")
def compress_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    target = ctx.target.name if ctx.target else "cortex-m4"
    result = compress(
        state.model, ctx.task, target=target, seed=ctx.seed, progress=False, **stage.args.kwargs()
    )
    state.model, state.qmodel = result.model, result.qmodel
    qat = result.quantization == "qat"
    state.quant = qat_record(result.qat, {}) if qat else ptq_record("ptq", {})
    c = result.costs
    return {
        "fits": result.fits,
        "within_drop": result.ok,
        "method": result.method,
        "quantization": result.quantization,
        "flash_bytes": c["flash_bytes"],
        "sram_bytes": c["sram_bytes"],
        "macs_kept": c["macs"] / result.original_costs["macs"],
        "float_accuracy": result.accuracy_float,
        "int8_accuracy": result.accuracy_int8,
        "problems": result.problems,
    }


@STAGES.register("evaluate")
def evaluate_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    split = stage.args.split
    return {"split": split, "split_accuracy": evaluate(state.current, ctx.task, split=split)}


@STAGES.register("export")
def export_stage(state: RunState, stage: Stage, ctx: Context) -> dict:
    a = stage.args
    where = ctx.out / (a.path or f"export/{stage.name}")
    if a.format == "onnx":
        path = where.with_suffix(".onnx") if where.suffix != ".onnx" else where
        model = state.current
        export_onnx(model, path, example=None if state.qmodel else ctx.task.example_inputs())
        return {"path": str(path.relative_to(ctx.out)), "bytes": path.stat().st_size}
    if a.format == "tflite":
        path = where.with_suffix(".tflite") if where.suffix != ".tflite" else where
        export_tflite(state.qmodel, path)
        return {"path": str(path.relative_to(ctx.out)), "bytes": path.stat().st_size}
    skip = ("format", "verify", "verify_inputs", "instructions", "path")
    report = export_c(state.qmodel, where, **a.kwargs(*skip))
    details = {
        "path": str(where.relative_to(ctx.out)),
        "flash_bytes": report["flash_bytes"],
        "arena_bytes": report["arena_bytes"],
        "arena_lower_bound": report["arena_lower_bound"],
        "fits": report["fits"],
    }
    if a.verify:
        x = ctx.task.inputs("test", a.verify_inputs)
        check = verify_c(state.qmodel, where, x)
        details.update(verified_inputs=check.inputs, mismatches=check.mismatches)
        if not check.bit_exact:
            raise RuntimeError(
                f"stage {stage.name}: the compiled C differs from run_int8 in "
                f"{check.mismatches} output values (largest difference {check.max_abs_diff}); "
                f"the export is in {where}"
            )
    if a.instructions:
        target = a.target or (ctx.target.name if ctx.target else "generic")
        binary = check.binary if a.verify else None  # built by verify_c just above
        est = estimate_c(
            state.qmodel, where, ctx.task.inputs("test", 4), target=target, binary=binary
        )
        details.update({k: est[k] for k in ("instructions", "target", "latency_ms", "energy_mj")})
        details["instructions_counted"] = est["model"]  # on the emulated core, or the host
    return details
