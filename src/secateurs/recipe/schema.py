"""The recipe schema: a YAML file validated by pydantic, with errors that give the YAML path.

A recipe names a task, a model and a seed, then lists stages, each a one-key mapping from
the stage kind to the arguments of the Python function it calls::

    task: digits
    model: {name: mobilenet_v2, width: 0.5}
    stages:
      - train: {epochs: 10, lr: 0.003}
      - prune: {target_macs: 0.5, importance: l1, scope: global}
      - distill: {method: kd, teacher: train, epochs: 5}
      - quantize: {method: qat, epochs: 3, lr: 0.0001}
      - export: {format: c, target: cortex-m4}

Arguments left out take the Python function's own defaults, so the two stay one thing.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._checks import parse_bytes
from .._io import load_yaml
from ..compression import METHODS as COMPRESS_METHODS
from ..data import TASKS
from ..distill import METHODS
from ..measure.target import TARGETS
from ..models import MODELS
from ..prune.importance import IMPORTANCE
from ..prune.regularizers import TARGETS as REGULARIZER_TARGETS
from ..prune.structured import SCOPES as CHANNEL_SCOPES
from ..prune.unstructured import IMPORTANCES as SPARSE_IMPORTANCES
from ..prune.unstructured import SCOPES as SPARSE_SCOPES
from ..quant import SCHEMES
from ..quant.observers import CALIBRATIONS
from ..quant.ptq import ROUNDINGS
from ..search import METHODS as SEARCHES
from ..search.budget import amount as budget_amount
from ..train import OPTIMIZERS, SCHEDULES

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
START = "model"  # the name of the model as the recipe builds or loads it, before any stage


class RecipeError(ValueError):
    """A recipe that cannot run: each line names the YAML path of a key and what is wrong."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source, self.problems = source, problems
        lines = [f"{path}: {message}" if path else message for path, message in problems]
        super().__init__(f"{source}: invalid recipe\n  " + "\n  ".join(lines))


def _known(registry, name: str) -> str:
    registry.get(name)  # raises ValueError listing the known names
    return name


def _registered(registry, field: str):
    """A validator: ``field`` must name an entry of ``registry`` (the error lists them)."""

    def check(cls, v: str) -> str:
        return _known(registry, v)

    return field_validator(field)(classmethod(check))


MAX_COUNT = 1_000_000  # the largest whole number (epochs, batch size, steps...) a key takes


def _number_kinds(annotation) -> set[type]:
    args = typing.get_args(annotation) or (annotation,)
    return {a for a in args if a in (int, float, bool)}


class Checked(BaseModel):
    """Base of every recipe and grid mapping: unknown keys, infinities and NaNs are errors;
    so are ``true``/``false`` where a number belongs and whole numbers above
    ``MAX_COUNT`` (no run could finish them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        fields = {f.alias or k: f for k, f in cls.model_fields.items()}
        for key, value in data.items():
            if value is None and key in fields:
                raise ValueError(f"{key}: null is not a value; leave the key out for its default")
            kinds = _number_kinds(fields[key].annotation) if key in fields else set()
            if not kinds or bool in kinds or not isinstance(value, (int, float)):
                continue
            if isinstance(value, bool):
                raise ValueError(f"{key}: expected a number, got {value}")
            if float not in kinds and abs(value) > MAX_COUNT and key not in ("seed", "seeds"):
                what = "more than any run could do" if value > 0 else "out of range"
                raise ValueError(f"{key}: {value:g} is {what} (at most {MAX_COUNT:,} either way)")
        return data


class Args(Checked):
    """Base of every stage's arguments: unknown keys are errors; ``name`` labels the stage."""

    name: str | None = Field(
        default=None, description="label in the report; default: the stage kind"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.' only")
        if v == START:
            raise ValueError(f"'{START}' names the starting model; pick another name")
        return v

    def kwargs(self, *exclude: str) -> dict[str, Any]:
        """The arguments the recipe set, minus runner-level ones, for the Python call."""
        return self.model_dump(exclude_unset=True, exclude={"name", *exclude})


FIT_KEYS = ("epochs", "lr", "optimizer", "batch_size", "weight_decay", "momentum", "schedule")


class FitArgs(Args):
    """The arguments of ``sc.fit``; the recipe's seed is passed as ``seed``."""

    epochs: int | None = Field(default=None, ge=0)
    lr: float | None = Field(default=None, gt=0)
    optimizer: Literal[OPTIMIZERS] | None = None  # type: ignore[valid-type]
    batch_size: int | None = Field(default=None, ge=1)
    weight_decay: float | None = Field(default=None, ge=0)
    momentum: float | None = Field(default=None, ge=0, le=1)
    schedule: Literal[SCHEDULES] | None = None  # type: ignore[valid-type]

    def fit_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.kwargs().items() if k in FIT_KEYS}


class Train(FitArgs):
    """Train with cross-entropy: ``sc.fit``."""


class Finetune(FitArgs):
    """Recover accuracy after compression: ``sc.fit`` on the compressed model."""


class Regularize(FitArgs):
    """Train with a sparsity regularizer added to the loss (``sc.prune.L1`` ... ``GroupLasso``),
    usually before a ``prune`` stage with ``threshold``."""

    regularizer: Literal["l1", "l2", "elastic_net", "smooth_l12", "group_lasso"]
    weight: float | None = Field(default=None, gt=0)
    target: Literal[REGULARIZER_TARGETS] | None = None  # type: ignore[valid-type]
    l1_ratio: float | None = Field(default=None, ge=0, le=1, description="elastic_net only")
    a: float | None = Field(default=None, gt=0, description="smooth_l12 only")

    @model_validator(mode="after")
    def _applies(self) -> Regularize:
        only = {"l1_ratio": "elastic_net", "a": "smooth_l12"}
        for key, reg in only.items():
            if key in self.model_fields_set and self.regularizer != reg:
                raise ValueError(f"{key} applies to regularizer {reg} only")
        if "target" in self.model_fields_set and self.regularizer == "group_lasso":
            raise ValueError("group_lasso penalizes whole channel groups; it takes no target")
        return self


class Prune(Args):
    """Remove channels: ``sc.prune.channels`` (exactly one of ratio, target_macs, threshold)."""

    ratio: float | dict[str, float] | None = None
    target_macs: float | None = Field(default=None, gt=0, le=1)
    threshold: float | None = None
    importance: str | None = None
    scope: Literal[CHANNEL_SCOPES] | None = None  # type: ignore[valid-type]
    ignored: list[str] | None = None
    round_to: int | None = Field(default=None, ge=1)
    max_layer_ratio: float | None = Field(default=None, ge=0, lt=1)
    recalibrate: bool | None = None

    _importance = _registered(IMPORTANCE, "importance")

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v):
        for r in v.values() if isinstance(v, dict) else [v]:
            if not 0 <= r < 1:
                raise ValueError(f"a ratio is the fraction of channels removed, in [0, 1); got {r}")
        return v

    @model_validator(mode="after")
    def _one_amount(self) -> Prune:
        given = [k for k in ("ratio", "target_macs", "threshold") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"give exactly one of ratio, target_macs, threshold; got {given}")
        return self


class PruneLayers(Args):
    """Remove whole layers (blocks): ``sc.prune.layers`` (exactly one of target_macs, count)."""

    target_macs: float | None = Field(default=None, gt=0, le=1)
    count: int | None = Field(default=None, ge=0)
    candidates: list[str] | None = None
    num_batches: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_amount(self) -> PruneLayers:
        given = [k for k in ("target_macs", "count") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"give exactly one of target_macs, count; got {given}")
        return self


class Sparsify(FitArgs):
    """Mask weights: ``sc.prune.sparsify``. With ``epochs``, the masks are applied on the
    ``ramp`` (``SparsitySchedule``: one_shot, iterative in ``steps``, or Zhu & Gupta's
    gradual) while the model trains; without, they are applied at once."""

    sparsity: float | None = Field(default=None, ge=0, lt=1)
    importance: Literal[SPARSE_IMPORTANCES] | None = None  # type: ignore[valid-type]
    scope: Literal[SPARSE_SCOPES] | None = None  # type: ignore[valid-type]
    granularity: str | None = None
    ignored: list[str] | None = None
    block_size: int | None = Field(default=None, ge=1)
    ramp: Literal["one_shot", "iterative", "gradual"] = "one_shot"
    steps: int | None = Field(default=None, ge=1, description="iterative ramp only")

    @model_validator(mode="after")
    def _ramp(self) -> Sparsify:
        if "steps" in self.model_fields_set and self.ramp != "iterative":
            raise ValueError("steps applies to ramp iterative only")
        if self.ramp != "one_shot" and not self.epochs:
            raise ValueError(f"ramp {self.ramp} raises the sparsity while training; set epochs")
        if self.ramp == "gradual" and (self.epochs or 0) < 2:
            raise ValueError("ramp gradual needs at least 2 epochs")
        return self


class BudgetSpec(Checked):
    """``sc.search.Budget``: a share of the unpruned model (a float up to 1, or "50%") or
    an absolute amount (an int, or bytes such as "64KiB"); or ``target``, a device whose
    flash and SRAM are the limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    macs: int | float | str | None = None
    params: int | float | str | None = None
    flash_bytes: int | float | str | None = None
    sram_bytes: int | float | str | None = None
    latency_ms: float | None = Field(default=None, gt=0)
    weight_bits: int | None = Field(default=None, ge=1, le=32)
    activation_bits: int | None = Field(default=None, ge=1, le=32)
    target: str | None = None

    _target = _registered(TARGETS, "target")

    @field_validator("macs", "params", "flash_bytes", "sram_bytes")
    @classmethod
    def _amount(cls, v, info):
        return budget_amount(info.field_name, v)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        limits = {"macs", "params", "flash_bytes", "sram_bytes", "latency_ms", "target"}
        if not limits & self.model_fields_set:
            raise ValueError(f"give at least one of {', '.join(sorted(limits))}")
        return self


class Search(Args):
    """Find per-layer widths under a budget and prune to them: a method of
    ``sc.search.METHODS`` (uniform, sensitivity, admm, abc, autoprune, metapruning),
    with its own keyword arguments under ``options``."""

    method: str
    budget: BudgetSpec
    finetune_epochs: int | None = Field(default=None, ge=0)
    lr: float | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in SEARCHES:
            raise ValueError(f"unknown search method {v!r}; known: {', '.join(SEARCHES)}")
        return v

    @model_validator(mode="after")
    def _options(self) -> Search:
        taken = {"model", "task", "budget", "seed", "finetune_epochs", "lr"}
        accepted = set(inspect.signature(SEARCHES[self.method]).parameters) - taken
        unknown = sorted(set(self.options) - accepted)
        if unknown:
            raise ValueError(
                f"options {unknown} are not arguments of {self.method}; it takes {sorted(accepted)}"
            )
        return self


class Distill(FitArgs):
    """Train from a teacher: ``sc.distill.distill``. ``teacher`` names an earlier stage (the
    model as that stage left it) or ``model`` (the starting model); default: the last
    train stage before this one."""

    method: str | None = None
    teacher: str | None = None
    alpha: float | None = Field(default=None, ge=0, le=1)
    temperature: float | None = Field(default=None, gt=0)
    layers: list[str] | dict[str, str] | None = None
    feature_weight: float | None = Field(default=None, ge=0)
    attention_weight: float | None = Field(default=None, ge=0)

    _method = _registered(METHODS, "method")


QUANT_ONLY = {
    "lsq": ("qat",),
    "range_momentum": ("qat",),
    "teacher": ("qat",),
    "alpha": ("qat",),
    "temperature": ("qat",),
    "bits": ("qgt",),
    "weight": ("qgt",),
    "rounding": ("ptq", "qgt"),
}


class Quantize(FitArgs):
    """Quantize: ``ptq`` (``sc.quant.quantize``), ``qat`` (``prepare_qat``, ``sc.fit``,
    ``convert``; optionally with KD from a float ``teacher`` stage) or ``qgt`` (``sc.fit``
    with ``QuantizationGuided(bits, weight)``, then PTQ at ``bits``-bit weights)."""

    method: Literal["ptq", "qat", "qgt"] = "ptq"
    scheme: str | None = None
    calibration: Literal[CALIBRATIONS] | None = None  # type: ignore[valid-type]
    num_batches: int | None = Field(default=None, ge=1)
    weight_bits: int | dict[str, int] | None = None
    rounding: Literal[ROUNDINGS] | None = None  # type: ignore[valid-type]
    lsq: bool | None = None
    range_momentum: float | None = Field(
        default=None, ge=0, le=1, description="prepare_qat momentum"
    )
    teacher: str | None = None
    alpha: float | None = Field(default=None, ge=0, le=1)
    temperature: float | None = Field(default=None, gt=0)
    bits: int | None = Field(default=None, ge=2, le=8)
    weight: float | None = Field(default=None, gt=0)

    _scheme = _registered(SCHEMES, "scheme")

    @model_validator(mode="after")
    def _applies(self) -> Quantize:
        for key in sorted(self.model_fields_set):
            methods = QUANT_ONLY.get(key)
            if key in FIT_KEYS and self.method == "ptq":
                methods = ("qat", "qgt")
            if methods and self.method not in methods:
                raise ValueError(f"{key} applies to method {' or '.join(methods)} only")
        if self.method == "qgt" and "weight_bits" in self.model_fields_set:
            raise ValueError("qgt quantizes weights to its bits; set bits, not weight_bits")
        return self


class Evaluate(Args):
    """Record top-1 accuracy on a split: ``sc.evaluate``."""

    split: Literal["train", "val", "test"] = "test"


class Export(Args):
    """Write the model out: ``c`` (``sc.deploy.export_c``, then compiled and checked bit for
    bit against ``run_int8`` when ``verify``; with ``instructions``, the instructions per
    inference on 4 test inputs, counted on the emulated core where the target names a
    Cortex-M and its toolchain is installed, else by callgrind on the host
    (``sc.deploy.estimate_c``), and the latency they give on the target), ``tflite`` or
    ``onnx``; into ``path`` under the run folder (default
    ``export/<stage name>``)."""

    format: Literal["c", "onnx", "tflite"]
    target: str | None = None
    sparse: Literal["auto", "never", "always"] | None = None
    verify: bool = True
    verify_inputs: int = Field(default=64, ge=1)
    instructions: bool = False
    path: str | None = None

    _target = _registered(TARGETS, "target")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("give a path inside the run folder (relative, without '..')")
        return v

    @model_validator(mode="after")
    def _applies(self) -> Export:
        if self.format != "c" and {"target", "sparse", "instructions"} & self.model_fields_set:
            raise ValueError("target, sparse and instructions apply to format c only")
        return self


class Compress(Args):
    """Compress the model until its int8 C fits the recipe's target and these limits:
    ``sc.compress`` (width search, fine-tuning, PTQ or QAT). The int8 model it returns is
    what later ``evaluate`` and ``export`` stages take."""

    flash: int | float | str | None = None  # bytes: no MAX_COUNT
    sram: int | float | str | None = None
    macs: float | int | None = Field(default=None, gt=0)
    latency_ms: float | None = Field(default=None, gt=0)
    max_accuracy_drop: float | None = Field(default=None, ge=0)
    method: Literal[COMPRESS_METHODS] | None = None  # type: ignore[valid-type]
    finetune_epochs: int | None = Field(default=None, ge=0)
    lr: float | None = Field(default=None, gt=0)
    qat_epochs: int | None = Field(default=None, ge=0)
    distill: bool | None = None
    max_steps: int | None = Field(default=None, ge=0)

    @field_validator("flash", "sram")
    @classmethod
    def _bytes(cls, v, info):
        return parse_bytes(v, info.field_name)


STAGE_KINDS: dict[str, type[Args]] = {
    "train": Train,
    "finetune": Finetune,
    "regularize": Regularize,
    "prune": Prune,
    "prune_layers": PruneLayers,
    "search": Search,
    "sparsify": Sparsify,
    "distill": Distill,
    "quantize": Quantize,
    "compress": Compress,
    "evaluate": Evaluate,
    "export": Export,
}
FLOAT_ONLY = {
    "train",
    "finetune",
    "regularize",
    "prune",
    "prune_layers",
    "search",
    "sparsify",
    "distill",
    "quantize",
    "compress",
}


class ModelSpec(Checked):
    """A zoo model (``name``, ``width``, builder ``args``) or a user's own (``import:
    "package.module:build"``, called with ``args``), optionally with weights from
    ``checkpoint``: a ``secateurs train --out`` file (which names its model itself) or a
    plain state dict for the model named."""

    model_config = ConfigDict(populate_by_name=True)
    name: str | None = None
    import_: str | None = Field(default=None, alias="import")
    width: float = Field(default=1.0, gt=0, le=64)
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None

    _name = _registered(MODELS, "name")

    @field_validator("import_")
    @classmethod
    def _import(cls, v: str) -> str:
        module, _, attr = v.partition(":")
        if not module or not attr:
            raise ValueError("give 'package.module:build', such as 'my_pkg.models:build'")
        return v

    @model_validator(mode="after")
    def _something(self) -> ModelSpec:
        if self.name is not None and self.import_ is not None:
            raise ValueError("give either name (a zoo model) or import (your own), not both")
        if self.name is None and self.import_ is None and self.checkpoint is None:
            raise ValueError(
                "give the zoo model's name, import: 'my_pkg.models:build', or a checkpoint to load"
            )
        if self.import_ is not None and self.width != 1.0:
            raise ValueError("width applies to zoo models; pass your builder's own in args")
        return self


class Stage(BaseModel):
    """One validated stage: its kind, its unique name, and its arguments."""

    model_config = ConfigDict(frozen=True)
    kind: str
    name: str
    args: Args
    teacher: str | None = None  # resolved: the stage name (or "model") the teacher comes from


def check_task_args(task: str, args: Mapping[str, Any]) -> None:
    """Options are for built-in tasks, and only those their loader takes (``seed`` is the
    recipe's own)."""
    if not args:
        return
    if task not in TASKS:
        raise ValueError(f"options {sorted(args)} apply to built-in tasks only, not {task!r}")
    accepted = set(inspect.signature(TASKS.get(task)).parameters) - {"seed"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(
            f"task {task} takes no option {unknown[0]!r}; its options: "
            f"{', '.join(sorted(accepted)) or 'none'}"
        )


class Recipe(Checked):
    """A validated recipe; build one with :func:`load_recipe` or :func:`parse_recipe`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    # a built-in task's options (``task: {name: fashion_mnist, train_size: 6000}`` in YAML)
    task_args: dict[str, Any] = Field(default_factory=dict)
    model: ModelSpec
    seed: int = Field(default=0, ge=0)
    target: str = "cortex-m4"
    description: str = ""
    stages: list[Any] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _task_mapping(cls, data: Any) -> Any:
        """``task: {name: X, <options>}`` is task X loaded with those options."""
        if isinstance(data, Mapping) and isinstance(data.get("task"), Mapping):
            spec = dict(data["task"])
            if "task_args" in data:
                raise ValueError("give a task's options in its mapping or in task_args, not both")
            return {**data, "task": spec.pop("name", None), "task_args": spec}
        return data

    @model_validator(mode="after")
    def _task_options(self) -> Recipe:
        check_task_args(self.task, self.task_args)
        return self

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v not in TASKS and not Path(v).exists():
            raise ValueError(
                f"unknown task {v!r}; known tasks: {', '.join(TASKS.names())}, or the path "
                "of an .npz file or image folder"
            )
        return v

    _target = _registered(TARGETS, "target")

    def digest(self) -> str:
        """A stable text of the whole recipe, to tell whether a run folder holds this one."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _location(loc: tuple, data: Any) -> str:
    """``stages[2].prune.ratio`` from a pydantic error location, dropping the union-member
    tags pydantic adds (``float``, ``dict[str,float]``) that are not keys of the data."""
    parts, node = [], data
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
            parts.append(f"[{key}]")
            node = node[key]
        elif isinstance(key, str) and isinstance(node, Mapping) and key in node:
            parts.append(f".{key}" if parts else key)
            node = node[key]
        elif isinstance(key, str) and isinstance(node, Mapping) and not parts:
            parts.append(key)  # a missing top-level key
            node = None
        elif isinstance(node, Mapping) and isinstance(key, str) and "[" not in key:
            parts.append(f".{key}")  # a missing nested key
            node = None
    return "".join(parts)


def _echo(value: Any) -> str:
    """A value as an error message quotes it: short, however large or nested it is."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxdict, r.maxlist = 3, 60, 60, 6, 6
    return r.repr(value)


def _problems(err: ValidationError, data: Any, prefix: tuple = ()) -> list[tuple[str, str]]:
    seen: dict[str, list[str]] = {}
    for e in err.errors(include_url=False):
        path = _location(prefix + tuple(e["loc"]), data)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif "input" in e and e["type"] not in ("value_error", "assertion_error"):
            msg += f" (got {_echo(e['input'])})"
        if msg not in seen.setdefault(path, []):
            seen[path].append(msg)
    out: list[tuple[str, str]] = []
    for path, msgs in seen.items():
        if len(msgs) > 1 and all(m.startswith("Input should be") for m in msgs):
            msgs = ["; or ".join(msgs)]  # one line per key for a union's alternatives
        out.extend((path, m) for m in msgs)
    return out


def _stage(i: int, item: Any, data: Any) -> tuple[Stage | None, list[tuple[str, str]]]:
    where = f"stages[{i}]"
    if not isinstance(item, Mapping) or len(item) != 1:
        kinds = ", ".join(STAGE_KINDS)
        return None, [
            (
                where,
                "a stage is a one-key mapping such as {train: {epochs: 10}}, "
                f"with the key one of {kinds}; got {_echo(item)}",
            )
        ]
    ((kind, args),) = item.items()
    if kind not in STAGE_KINDS:
        return None, [(where, f"unknown stage {kind!r}; known stages: {', '.join(STAGE_KINDS)}")]
    try:
        parsed = STAGE_KINDS[kind].model_validate({} if args is None else args)
    except ValidationError as err:
        return None, _problems(err, data, ("stages", i, kind))
    return Stage(kind=kind, name=parsed.name or kind, args=parsed), []


def _default_name(stage: Stage) -> str:
    args = stage.args
    if args.name:
        return args.name
    if isinstance(args, (Quantize, Search)):
        return args.method
    if isinstance(args, Export):
        return f"export-{args.format}"
    return stage.kind


def _check_sequence(stages: list[Stage]) -> tuple[list[Stage], list[tuple[str, str]]]:
    """What no single stage can see: names, teachers, and what may follow quantization.
    Returns the stages with their teachers resolved, and the problems."""
    problems, resolved = [], []
    names: dict[str, int] = {}
    quantized_at = None
    for i, s in enumerate(stages):
        where = f"stages[{i}].{s.kind}"
        if s.name in names:
            problems.append(
                (
                    where,
                    f"stage name {s.name!r} is used by stages[{names[s.name]}] "
                    "too; give one of them another name",
                )
            )
        teacher = getattr(s.args, "teacher", None)
        if s.kind == "distill" and teacher is None:
            trained = [n for n, j in names.items() if stages[j].kind == "train"]
            teacher = trained[-1] if trained else START
        resolved.append(s.model_copy(update={"teacher": teacher}))
        if teacher is not None and teacher != START:
            j = names.get(teacher)
            if j is None:
                problems.append(
                    (
                        f"{where}.teacher",
                        f"{teacher!r} names no earlier stage; use one of {[START, *names]}",
                    )
                )
            elif quantized_at is not None and j >= quantized_at:
                problems.append(
                    (
                        f"{where}.teacher",
                        f"{teacher!r} is quantized; a teacher must "
                        "be a float model from before the quantize stage",
                    )
                )
        if quantized_at is not None and s.kind in FLOAT_ONLY:
            problems.append(
                (
                    where,
                    f"a {s.kind} stage cannot follow quantization (stages"
                    f"[{quantized_at}]); only evaluate and export can",
                )
            )
        if s.kind in ("quantize", "compress") and quantized_at is None:
            quantized_at = i
        if isinstance(s.args, Export) and s.args.format in ("c", "tflite") and quantized_at is None:
            problems.append(
                (
                    f"{where}.format",
                    f"{s.args.format} exports an int8 model; put a "
                    "quantize or compress stage before this one",
                )
            )
        names.setdefault(s.name, i)
    return resolved, problems


def apply_overrides(data: Any, overrides: Mapping[str, Any]) -> Any:
    """Set ``{"stages[0].train.epochs": 1, ...}`` in the raw recipe data (a copy)."""
    data = json.loads(json.dumps(data))
    for path, value in overrides.items():
        keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
        if not keys:
            raise ValueError(f"override {path!r} names no key")
        node = data
        for depth, key in enumerate(keys[:-1]):
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                shown = path if depth == 0 else ".".join(map(str, keys[: depth + 1]))
                raise ValueError(f"override {path!r}: the recipe has no {shown!r}") from None
            if node is None:
                raise ValueError(f"override {path!r}: {keys[depth]!r} is empty in the recipe")
        if isinstance(node, list) and not (isinstance(keys[-1], int) and keys[-1] < len(node)):
            raise ValueError(f"override {path!r}: index {keys[-1]} is out of range")
        if not isinstance(node, (list, dict)):
            raise ValueError(f"override {path!r}: {keys[-2]!r} is not a mapping")
        node[keys[-1]] = value
    return data


def parse_recipe(
    data: Any, *, source: str = "recipe", overrides: Mapping[str, Any] | None = None
) -> tuple[Recipe, list[Stage]]:
    """Validate recipe ``data`` (as ``yaml.safe_load`` returns it), with ``overrides`` (YAML
    paths to values) applied first; raise RecipeError naming every problem by its YAML path,
    the file called ``source``."""
    if overrides:
        try:
            data = apply_overrides(data, overrides)
        except ValueError as err:
            raise RecipeError(source, [("", str(err))]) from None
    if not isinstance(data, Mapping):
        raise RecipeError(
            source,
            [("", f"a recipe is a mapping with task, model and stages; got {type(data).__name__}")],
        )
    problems: list[tuple[str, str]] = []
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems += _problems(err, data)
    stages = []
    raw = data.get("stages")
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        stage, errs = _stage(i, item, data)
        problems += errs
        if stage is not None:
            stages.append(stage)
    if problems:
        raise RecipeError(source, problems)
    counts: dict[str, int] = {}
    named = []
    for s in stages:
        base = _default_name(s)
        counts[base] = counts.get(base, 0) + 1
        name = base if counts[base] == 1 or s.args.name else f"{base}-{counts[base]}"
        named.append(Stage(kind=s.kind, name=name, args=s.args))
    named, problems = _check_sequence(named)
    if problems:
        raise RecipeError(source, problems)
    assert recipe is not None  # it failed only with problems, raised above
    recipe = recipe.model_copy(
        update={
            "stages": [
                {
                    s.kind: s.args.model_dump(mode="json", exclude_unset=True)
                    | {"name": s.name, **({"teacher": s.teacher} if s.teacher else {})}
                }
                for s in named
            ]
        }
    )
    return recipe, named


def load_recipe(
    path: str | Path, *, overrides: Mapping[str, Any] | None = None
) -> tuple[Recipe, list[Stage]]:
    """Read the recipe file at ``path`` with ``yaml.safe_load`` (aliases limited), apply
    ``overrides`` and validate it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(str(path), [("", "no such recipe file")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(str(path), [("", f"cannot read it: {err}")]) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise RecipeError(str(path), [("", f"not valid YAML: {err}")]) from None
    return parse_recipe(data, source=str(path), overrides=overrides)
