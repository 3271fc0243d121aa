"""What a run carries from stage to stage, and its checkpoints.

A checkpoint holds everything needed to rebuild the model exactly: the zoo builder and its
arguments, the pruning history (replayed on a fresh build), which layers carry sparsity
masks, the state dict, and how the model was quantized (PTQ arguments, or the QAT
arguments and the trained quantizers' state), so that a resumed run continues from the
very numbers the interrupted one reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..data.task import Task
from ..graph.graph import pruning_history, replay
from ..models import check_model_fits, create, from_import
from ..models.checkpoint import FORMAT as ZOO_FORMAT
from ..models.checkpoint import atomic_save, load_versioned, read_weights_file, state_dict_of
from ..prune.unstructured import WeightMask
from ..quant import QATModel, QuantizedModel, convert, prepare_qat, quantize

FORMAT = "secateurs.run/1"


@dataclass
class RunState:
    """The float model (pruned, masked), its zoo spec, and once quantized the int8 model
    with the record of how it was made."""

    model: nn.Module
    spec: dict[str, Any]  # {"name", "width", "kwargs"}: rebuilds the unpruned model
    qmodel: QuantizedModel | None = None
    quant: dict[str, Any] | None = None  # {"method", "args", "qat_state"}

    @property
    def current(self) -> nn.Module:
        """The model the next evaluation sees: the int8 one once quantized."""
        return self.model if self.qmodel is None else self.qmodel


def _masked(model: nn.Module) -> list[str]:
    names = []
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        plist = module.parametrizations
        if set(plist) != {"weight"} or not all(isinstance(p, WeightMask) for p in plist.weight):
            raise ValueError(
                f"'{name}' carries a parametrization other than a sparsity mask; a run "
                "checkpoint stores WeightMask masks only (call sc.prune.fix_masks first)"
            )
        names.append(name)
    return names


def _spec(spec) -> dict:
    if spec.import_ is not None:
        return {"import": spec.import_, "kwargs": dict(spec.args)}
    return {"name": spec.name, "width": spec.width, "kwargs": dict(spec.args)}


def _create(spec: dict, task: Task, seed: int | None) -> nn.Module:
    """A zoo model, or a user's (``spec["import"]``, imported again in a resumed run)."""
    if "import" in spec:
        model = from_import(spec["import"], seed=seed or 0, **spec["kwargs"])
        check_model_fits(model, task, name=spec["import"])
        return model
    return create(spec["name"], task, width=spec["width"], seed=seed, **spec["kwargs"])


def build_model(spec, task: Task, seed: int) -> RunState:
    """The starting model of a recipe for ``task``, as its model ``spec`` says: a fresh zoo or
    imported model (initial weights drawn with ``seed``), or one loaded from a checkpoint."""
    if spec.checkpoint is not None:
        path = Path(spec.checkpoint)
        obj = read_weights_file(path, "model.checkpoint")
        if isinstance(obj, dict) and obj.get("format") == ZOO_FORMAT:
            ckpt = load_versioned(path, ZOO_FORMAT, "secateurs checkpoint")
            if spec.name is not None and spec.name != ckpt["model"]:
                raise ValueError(
                    f"model.name is {spec.name!r} but {path} holds a {ckpt['model']!r}; "
                    "drop model.name or give the matching one"
                )
            model_spec = {"name": ckpt["model"], "width": ckpt["width"], "kwargs": ckpt["kwargs"]}
            state = ckpt["state_dict"]
        else:
            if spec.name is None and spec.import_ is None:
                raise ValueError(
                    f"model.checkpoint: {path} is a plain state dict; also give model.name "
                    "(and its width and args) or model.import so the model can be built"
                )
            model_spec = _spec(spec)
            state = state_dict_of(obj, path, "model.checkpoint")
    else:
        model_spec = _spec(spec)
        state = None
    model = _create(model_spec, task, seed)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"model.checkpoint does not fit {model_spec.get('name') or model_spec['import']}: "
                f"{str(err)[:500]}"
            ) from None
    return RunState(model, model_spec)


def save_state(state: RunState, path: str | Path, stage: int, name: str) -> None:
    """Write the run ``state`` after stage ``stage`` (named ``name``) atomically to ``path``."""
    atomic_save(
        {
            "format": FORMAT,
            "stage": stage,
            "name": name,
            "spec": state.spec,
            "history": pruning_history(state.model),
            "masks": _masked(state.model),
            "state_dict": state.model.state_dict(),
            "quant": state.quant,
        },
        path,
    )


def _rebuild(spec: dict, history: list, masks: list[str], task: Task) -> nn.Module:
    model = _create(spec, task, None)
    replay(model, history)
    modules = dict(model.named_modules())
    for name in masks:
        module = modules[name]
        parametrize.register_parametrization(
            module, "weight", WeightMask(torch.ones_like(module.weight))
        )
    return model


def load_state(path: str | Path, task: Task) -> RunState:
    """Rebuild the run state saved at ``path`` by :func:`save_state`, for ``task``."""
    ckpt = load_versioned(path, FORMAT, "secateurs run checkpoint")
    model = _rebuild(ckpt["spec"], ckpt["history"], ckpt["masks"], task)
    model.load_state_dict(ckpt["state_dict"])
    state = RunState(model, ckpt["spec"])
    quant = ckpt["quant"]
    if quant is not None:
        state.quant = quant
        if quant["method"] == "qat":
            qat = prepare_qat(model, task, **quant["args"])
            qat.load_state_dict(quant["qat_state"])
            state.qmodel = convert(qat)
        else:
            state.qmodel = quantize(model, task, **quant["args"])
    model.eval()
    return state


def ptq_record(method: str, args: dict) -> dict:
    """What :func:`load_state` needs to quantize the model again: PTQ's arguments."""
    return {"method": method, "args": args, "qat_state": None}


def qat_record(qat: QATModel, args: dict) -> dict:
    """What :func:`load_state` needs to rebuild a QAT-trained int8 model."""
    return {"method": "qat", "args": args, "qat_state": qat.state_dict()}
