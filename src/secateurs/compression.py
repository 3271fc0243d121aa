"""One call from a trained ``nn.Module`` and its data to int8 C that fits a microcontroller.

result = sc.compress(model, (train_loader, val_loader), target="cortex-m4",
                     flash="64KiB", sram="16KiB", max_accuracy_drop=0.01, out="build/")

The steps are the loop of Han et al. 2015 (arXiv 1510.00149) with the project's pieces:
measure the model as the exported C would store and run it; if it is over the budget,
search the per-layer widths under it (``sc.search`` with ``Budget(measure="c")``: uniform
widths, or greedy sensitivity after Li et al. 2016, arXiv 1608.08710), re-estimate
BatchNorm statistics (Li et al. 2020, EagleEye, arXiv 2007.02491), fine-tune (optionally
distilling from the original, Hinton et al. 2015, arXiv 1503.02531), quantize to int8
(post-training, or quantization-aware training where that loses more than allowed; Jacob
et al. 2018, arXiv 1712.05877), measure the int8 model again as the C would, and tighten
the search's limits if the calibrated model's C is still over (rare: bias-safe weight
scales, sparse layouts). With ``max_accuracy_drop``, smaller models are tried below the
budget and the smallest within the drop is kept. ``out`` gets the C (compiled on the host
and checked bit for bit against the integer reference), the pruned float model and a
summary.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ._checks import check_choice, check_float, check_int, parse_bytes
from ._io import check_output_path, write_atomic
from .data.forms import as_task
from .measure import profile
from .measure.target import Target, check, get_target
from .models.registry import check_model_fits
from .search.budget import Budget, BudgetError, Costs
from .train import evaluate, fit

log = logging.getLogger(__name__)

# "auto" runs both and keeps the more accurate at int8 (validation): uniform widths win
# under tight SRAM limits, greedy sensitivity under MAC limits (benchmarks/compress.py).
AUTO_METHODS = ("uniform", "sensitivity")
METHODS = ("auto", "uniform", "sensitivity", "admm", "abc", "autoprune", "metapruning")
# PTQ is kept unless it loses more than this against the float model (then QAT is tried).
PTQ_TOLERANCE = 0.005
TIGHTEN_TRIES = 4  # searches with tightened limits before the C is declared out of reach
SMALLER = 0.6  # each step of the accuracy-controlled descent keeps this share of the MACs


@dataclass
class Point:
    """One compressed candidate: what it costs as C and how accurate it is (validation)."""

    model: nn.Module = field(repr=False)
    qmodel: nn.Module = field(repr=False)
    costs: dict[str, float]
    float_val: float
    int8_val: float
    quantization: str
    method: str | None  # the search that pruned it; None: unpruned
    qat: nn.Module | None = field(default=None, repr=False)  # the QATModel, where QAT won

    def over(self, limits: dict[str, float]) -> dict[str, float]:
        """Each limit this point breaks, as cost / limit."""
        return {m: self.costs[m] / v for m, v in limits.items() if self.costs[m] > v}


@dataclass
class CompressResult:
    """What :func:`compress` made: the compressed float model and its int8 model, their
    costs as the exported C stores and runs them against the limits, accuracies (the
    task's metric, top-1 by default) before and after on the test split, and, with
    ``out``, where the build is and whether the compiled C matched the integer reference."""

    model: nn.Module = field(repr=False)
    qmodel: nn.Module = field(repr=False)
    target: str
    method: str
    quantization: str
    limits: dict[str, float]
    costs: dict[str, float]
    original_costs: dict[str, float]
    accuracy_before: float
    accuracy_float: float
    accuracy_int8: float
    max_accuracy_drop: float | None
    problems: list[str] = field(default_factory=list)
    tried: list[dict] = field(default_factory=list, repr=False)
    qat: nn.Module | None = field(default=None, repr=False)
    out: Path | None = None
    verified: dict | None = None

    @property
    def drop(self) -> float:
        """Test accuracy lost, original float model to compressed int8 model."""
        return self.accuracy_before - self.accuracy_int8

    @property
    def fits(self) -> bool:
        return all(self.costs[m] <= v for m, v in self.limits.items())

    @property
    def ok(self) -> bool:
        """Fits every limit and, where a bound was given, stays within the drop."""
        return not self.problems

    def summary(self) -> dict:
        d = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("model", "qmodel", "out")
        }
        d.update(drop=self.drop, fits=self.fits, ok=self.ok, out=str(self.out or "") or None)
        return d


def compress(
    model: nn.Module,
    data,
    *,
    target: str | Target = "cortex-m4",
    flash: int | str | None = None,
    sram: int | str | None = None,
    macs: float | int | None = None,
    latency_ms: float | None = None,
    max_accuracy_drop: float | None = None,
    method: str = "auto",
    out: str | Path | None = None,
    loss: Callable | None = None,
    metric: Callable | None = None,
    finetune_epochs: int = 5,
    final_epochs: int = 10,
    lr: float = 3e-3,
    qat_epochs: int = 3,
    distill: bool = False,
    tflite: bool = False,
    max_steps: int = 3,
    ignored: Iterable[str] = (),
    seed: int = 0,
    progress: bool = True,
) -> CompressResult:
    """Compress ``model`` (trained; it is not changed) until its int8 C fits ``target``.

    ``data``: any form :func:`sc.data.as_task` takes (a Task, ``(train, val)`` loaders or
    tensors, ...); ``loss`` and ``metric`` replace cross-entropy and top-1 accuracy.
    Limits: ``flash`` and ``sram`` in bytes (``"64KiB"`` works; default: the target's),
    ``macs`` (a float up to 1 or "50%" is a share of the model's MACs, an int absolute) and
    ``latency_ms`` on the target, estimated from the instructions the C executes (on the
    emulated core where the target names one and the cross toolchain is installed, see
    ``sc.deploy.estimate_c``). ``max_accuracy_drop`` (in the metric's units: 0.01 is one
    point of accuracy): the smallest model within the drop is kept, trying up to
    ``max_steps`` models below the budget, each with ``SMALLER`` of the last one's MACs.
    ``finetune_epochs`` train each candidate after its search; the one kept trains
    ``final_epochs`` more (and is quantized again) before export.
    ``method``: a search of ``sc.search.METHODS``; "auto" runs uniform widths and greedy
    sensitivity and keeps the one more accurate at int8 on the validation split (neither
    wins everywhere: see docs/compress.md). ``distill``: fine-tune with knowledge
    distillation from the original (off by default: in benchmarks/compress.py it
    was level or behind in 12 of 12 cases). ``out``: write ``c/`` (verified on
    the host), ``model.tflite`` with ``tflite=True``, ``model.pt`` (``sc.graph.load_pruned``
    rebuilds it) and ``compress.json``.

    Also: ``lr`` of that training; ``qat_epochs`` of quantization-aware training where PTQ
    loses more than the allowed drop (0: PTQ only); ``ignored`` module paths left as they
    are; ``seed`` for every random choice; ``progress`` bars while it runs.

    Raises ``BudgetError`` when no model the search can reach fits, naming the closest
    reachable point; a fitting model that loses more than ``max_accuracy_drop`` is returned
    with ``ok`` False and ``problems`` saying so (and a warning).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    task = as_task(data, loss=loss, metric=metric)
    check_model_fits(model, task)
    t = get_target(target)
    check_choice("method", method, METHODS)
    flash_b = parse_bytes(flash, "flash") or t.flash_bytes
    sram_b = parse_bytes(sram, "sram") or t.sram_bytes
    if latency_ms is not None:
        latency_ms = check_float("latency_ms", latency_ms, minimum=0.0, strict_minimum=True)
    if max_accuracy_drop is not None:
        max_accuracy_drop = check_float("max_accuracy_drop", max_accuracy_drop, minimum=0.0)
    finetune_epochs = check_int("finetune_epochs", finetune_epochs, minimum=0)
    final_epochs = check_int("final_epochs", final_epochs, minimum=0)
    qat_epochs = check_int("qat_epochs", qat_epochs, minimum=0)
    max_steps = check_int("max_steps", max_steps, minimum=0)
    out = check_output_path(out, "compress", folder=True) if out is not None else None
    say = _Say(progress)

    share = Budget(macs=macs) if macs is not None else None  # checks it: a share or a count

    original = copy.deepcopy(model).eval()
    before_val = evaluate(original, task, split="val")
    before_test = evaluate(original, task, split="test")
    job = _Job(
        original,
        task,
        t,
        task.example_inputs(),
        method,
        finetune_epochs,
        lr,
        qat_epochs,
        distill,
        max_accuracy_drop,
        before_val,
        list(ignored),
        seed,
        say,
        timed=latency_ms is not None,
    )
    start = job.point(None)  # the model as given, quantized
    original_costs = job.first = dict(start.costs)
    say(f"original: {before_test:.4f} test, {original_costs['macs']:,} MACs")
    limits: dict[str, float] = {"flash_bytes": flash_b, "sram_bytes": sram_b}
    if share is not None:
        limits["macs"] = share.limits(Costs(original_costs["macs"], 0, 0, 0))["macs"]
    if latency_ms is not None:
        limits["latency_ms"] = latency_ms
    best = start if not start.over(limits) else job.fit_budget(limits, start)
    if max_accuracy_drop is not None and job.within(best.int8_val):
        best = job.descend(best, limits, max_steps)
    if final_epochs and best.method is not None:
        best = job.polish(best, final_epochs, limits)
    problems = []
    if max_accuracy_drop is not None and not job.within(best.int8_val):
        problems.append(
            f"the model found within the budget loses {before_val - best.int8_val:.4f} of "
            f"validation accuracy at int8, more than max_accuracy_drop={max_accuracy_drop}; "
            "loosen the budget or the bound, or fine-tune longer (finetune_epochs, qat_epochs)"
        )
        warnings.warn(problems[-1], stacklevel=2)
    result = CompressResult(
        best.model,
        best.qmodel,
        t.name,
        best.method or "none",
        best.quantization,
        limits,
        best.costs,
        original_costs,
        before_test,
        evaluate(best.model, task, split="test"),
        evaluate(best.qmodel, task, split="test"),
        max_accuracy_drop,
        problems,
        job.tried,
        best.qat,
    )
    if out is not None:
        _write(result, task, out, tflite, say)
    c = result.costs
    say(
        f"done: {result.accuracy_int8:.4f} test at int8 (drop {result.drop:+.4f}), "
        f"flash {c['flash_bytes']:,} B, SRAM {c['sram_bytes']:,} B"
    )
    return result


class _Say:
    """Stage lines: printed where output reaches a person, logged at INFO otherwise."""

    def __init__(self, progress: bool) -> None:
        from ._progress import interactive

        self.console = None
        if progress and interactive():
            from rich.console import Console

            self.console = Console(stderr=True)

    def __call__(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"[bold]compress[/bold] {message}", highlight=False)
        log.info("compress: %s", message)


@dataclass
class _Job:
    original: nn.Module
    task: object
    target: Target
    x: torch.Tensor
    search: str
    finetune_epochs: int
    lr: float
    qat_epochs: int
    distill: bool
    max_drop: float | None
    before_val: float
    ignored: list[str]
    seed: int
    say: Callable[[str], None]
    timed: bool = False
    tried: list[dict] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)  # the unpruned model's costs

    def within(self, int8_val: float) -> bool:
        """Within the allowed drop of validation accuracy (always, without a bound)."""
        return self.max_drop is None or self.before_val - int8_val <= self.max_drop + 1e-12

    def budget(self, limits: dict[str, float], shrink: dict[str, float], start: Point) -> Budget:
        """The search's Budget. A memory limit the unpruned model already meets is left out
        (pruning channels never grows the C), so that a MAC or latency limit alone is
        searched on the quick profile instead of a quantization per candidate."""
        spec = {}
        for m in ("flash_bytes", "sram_bytes", "macs"):
            binding = m == "macs" or m in shrink or self.first[m] > limits.get(m, math.inf)
            if m in limits and binding:
                spec[m] = max(1, int(limits[m] * shrink.get(m, 1.0)))
        if "latency_ms" in limits:  # latency follows the MACs executed, to first order
            share = limits["latency_ms"] / start.costs["latency_ms"] * shrink.get("latency_ms", 1)
            spec["macs"] = min(spec.get("macs", math.inf), max(1, int(share * start.costs["macs"])))
        memory = {"flash_bytes", "sram_bytes"} & set(spec)
        return Budget(**spec, measure="c" if memory else "profile")

    def fit_budget(self, limits: dict[str, float], start: Point) -> Point:
        """The largest model the search finds under ``limits``, tightening the search's
        limits by each overshoot the C shows."""
        shrink: dict[str, float] = {}
        for attempt in range(1, TIGHTEN_TRIES + 1):
            budget = self.budget(limits, shrink, start)
            p = self.point(budget)
            over = p.over(limits)
            if not over:
                return p
            self.say(f"attempt {attempt}: over the limits by {_ratios(over)}; tightening")
            for m, r in over.items():
                shrink[m] = shrink.get(m, 1.0) / r * 0.98
        raise BudgetError(
            f"after {TIGHTEN_TRIES} searches the C is still over the limits by {_ratios(over)} "
            f"(the closest reached: {_costs(p.costs)}); loosen the budget or start from a "
            "smaller model"
        )

    def descend(self, best: Point, limits: dict[str, float], steps: int) -> Point:
        """Smaller and smaller models below the budget, while they stay within the drop."""
        for _ in range(steps):
            tighter = dict(limits, macs=best.costs["macs"] * SMALLER)
            try:
                p = self.fit_budget(tighter, best)
            except BudgetError as err:
                self.say(f"no smaller model: {err}")
                break
            if not self.within(p.int8_val):
                break
            best = p
        return best

    def point(self, budget: Budget | None) -> Point:
        """Prune a copy of the original under ``budget`` (None: not at all), fine-tune,
        quantize and measure it as C; with method "auto", each of ``AUTO_METHODS`` and
        the one more accurate at int8 on the validation split kept."""
        if budget is None:
            return self.candidate(None, None)
        methods = AUTO_METHODS if self.search == "auto" else (self.search,)
        points = [self.candidate(budget, m) for m in methods]
        return max(points, key=lambda p: p.int8_val)

    def candidate(self, budget: Budget | None, method: str | None) -> Point:
        from .prune.recalibrate import recalibrate_bn
        from .search import METHODS as SEARCHES

        model = copy.deepcopy(self.original)
        if budget is not None:
            self.say(f"searching widths ({method}) under {_budget(budget)}")
            SEARCHES[method](
                model,
                self.task,
                budget,
                finetune_epochs=0,
                seed=self.seed,
                ignored=self.ignored,
                progress=self.say.console is not None,
            )
            recalibrate_bn(model, self.task)  # a model without batch norm is left alone
            if self.finetune_epochs:
                self.say(
                    f"fine-tuning {self.finetune_epochs} epochs"
                    + (" with distillation" if self.distill else "")
                )
                self.finetune(model)
        return self.measure(model, method, _budget(budget) if budget else None)

    def polish(self, best: Point, epochs: int, limits: dict[str, float]) -> Point:
        """Fine-tune the chosen model ``epochs`` more and quantize it again; kept where it
        is at least as accurate at int8 on validation and still fits."""
        self.say(f"fine-tuning the chosen model {epochs} more epochs")
        model = copy.deepcopy(best.model)
        self.finetune(model, epochs)
        p = self.measure(model, best.method, "final")
        return p if p.int8_val >= best.int8_val and not p.over(limits) else best

    def measure(self, model: nn.Module, method: str | None, label: str | None) -> Point:
        """Quantize ``model`` and measure it: validation accuracy, costs as C."""
        model.eval()
        float_val = evaluate(model, self.task, split="val")
        qmodel, how, qat, int8_val = self.quantize(model, float_val)
        if qat is not None:  # the float weights QAT trained are the int8 model's
            model = qat.model.eval()
        costs = self.costs(model, qmodel)
        self.tried.append(
            {
                "method": method,
                "budget": label,
                "costs": costs,
                "float_val": float_val,
                "int8_val": int8_val,
                "quantization": how,
            }
        )
        self.say(
            f"{label or 'unpruned'} ({method or 'as given'}): {_costs(costs)}; val "
            f"{float_val:.4f} float, {int8_val:.4f} int8"
        )
        return Point(model, qmodel, costs, float_val, int8_val, how, method, qat)

    def finetune(self, model: nn.Module, epochs: int | None = None) -> None:
        from .distill.kd import KD

        kd = [KD()] if self.distill else []
        fit(
            model,
            self.task,
            epochs=epochs or self.finetune_epochs,
            lr=self.lr,
            losses=kd,
            teacher=self.original if self.distill else None,
            seed=self.seed,
            progress=False,
        )

    def quantize(self, model: nn.Module, float_val: float):
        """PTQ, or QAT where PTQ loses more than ``PTQ_TOLERANCE`` (or the allowed drop):
        the int8 model, "ptq" or "qat", the QATModel (QAT only), validation accuracy."""
        from .quant import convert, prepare_qat, quantize

        qmodel = quantize(model, self.task)
        ptq_val = evaluate(qmodel, self.task, split="val")
        lost = float_val - ptq_val
        if self.qat_epochs == 0 or (lost <= PTQ_TOLERANCE and self.within(ptq_val)):
            return qmodel, "ptq", None, ptq_val
        self.say(f"PTQ loses {lost:.4f}; quantization-aware training {self.qat_epochs} epochs")
        trained = copy.deepcopy(model)
        qat = prepare_qat(trained, self.task)
        fit(qat, self.task, epochs=self.qat_epochs, lr=self.lr / 10, seed=self.seed, progress=False)
        q2 = convert(qat)
        qat_val = evaluate(q2, self.task, split="val")
        if qat_val > ptq_val:
            return q2, "qat", qat, qat_val
        return qmodel, "ptq", None, ptq_val

    def costs(self, model: nn.Module, qmodel) -> dict[str, float]:
        fit_ = check(qmodel, target=self.target)
        costs = {
            "flash_bytes": fit_.flash_bytes,
            "sram_bytes": fit_.sram_bytes,
            "macs": profile(model, self.x, weight_bits=8, activation_bits=8, latency=False).macs,
        }
        if fit_.problems and fit_.flash_bytes == 0:  # a missing kernel, not a size
            raise ValueError(f"the model cannot run on {self.target.name}: {fit_.problems[0]}")
        if self.timed:
            costs["latency_ms"] = self.latency(qmodel)
        return costs

    def latency(self, qmodel) -> float:
        """Estimated milliseconds per inference on the target (see ``estimate_c``)."""
        from .deploy import estimate_c, export_c

        with tempfile.TemporaryDirectory() as tmp:
            export_c(qmodel, tmp, target="generic")
            est = estimate_c(qmodel, tmp, self.task.inputs("test", 2), target=self.target)
        return float(est["latency_ms"])


def _write(result: CompressResult, task, out: Path, tflite: bool, say) -> None:
    """The C (verified on the host), the .tflite, the pruned float model and a summary."""
    import json

    from .deploy import export_c, export_tflite, verify_c, verify_tflite
    from .graph.persist import save_pruned

    x = task.inputs("test", 64)
    out.mkdir(parents=True, exist_ok=True)
    say(f"exporting C to {out / 'c'} and verifying it")
    export_c(result.qmodel, out / "c", target=result.target)
    v = verify_c(result.qmodel, out / "c", x)
    result.verified = {"c_inputs": v.inputs, "c_mismatches": v.mismatches}
    if tflite:
        export_tflite(result.qmodel, out / "model.tflite")
        try:
            vt = verify_tflite(result.qmodel, out / "model.tflite", x)
            result.verified.update(tflite_inputs=vt.inputs, tflite_mismatches=vt.mismatches)
        except ImportError as err:  # the runtime is an optional extra
            result.verified.update(tflite_unverified=str(err))
    save_pruned(result.model, out / "model.pt")
    result.out = out
    write_atomic(out / "compress.json", json.dumps(result.summary(), indent=2, default=str))
    if v.mismatches:
        raise RuntimeError(
            f"the compiled C in {out / 'c'} differs from the integer reference "
            f"in {v.mismatches} output values; please report this"
        )


def _ratios(over: dict[str, float]) -> str:
    return ", ".join(f"{m} {r:.3f}x" for m, r in over.items())


def _costs(costs: dict[str, float]) -> str:
    return ", ".join(
        f"{m} {v:,.0f}" if m != "latency_ms" else f"{m} {v:.3f}" for m, v in costs.items()
    )


def _budget(b: Budget) -> str:
    return ", ".join(f"{m} {getattr(b, m):,}" for m in b.metrics)
