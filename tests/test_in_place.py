"""The one rule for models: a public call changes its model in place (and is marked
``in_place``, and says "in place") or leaves it exactly as it was. Every public function
whose first argument is a float model is called here and held to its mark."""

from __future__ import annotations

import functools
import inspect
import re

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.search import Budget
from tests.test_layout import public_functions


class Net(nn.Module):
    """A stem, a shape-keeping block (removable) and a head, with batch norm."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def _pruned(task) -> nn.Module:
    other = Net(seed=1)
    sc.prune.channels(other, task.example_inputs(), ratio=0.5)
    return other


def _saved_weights(model, task, tmp):
    torch.save(Net(seed=1).state_dict(), tmp / "w.pt")
    return sc.models.load_weights(model, tmp / "w.pt")


def _saved_pruning(model, task, tmp):
    sc.graph.save_pruned(_pruned(task), tmp / "p.pt")
    return sc.graph.load_pruned(model, tmp / "p.pt")


def _masked(model, sparsity=0.5):
    sc.prune.sparsify(model, sparsity=sparsity)
    return model


HALF = Budget(macs=0.5)
CALLS = {  # name -> (model, task, tmp) -> anything; the model is a fresh Net
    "secateurs.compress": lambda m, t, tmp: sc.compress(m, t, progress=False),
    "secateurs.evaluate": lambda m, t, tmp: sc.evaluate(m, t),
    "secateurs.fit": lambda m, t, tmp: sc.fit(m, t, epochs=1),
    "secateurs.models.check_model_fits": lambda m, t, tmp: sc.models.check_model_fits(m, t),
    "secateurs.models.load_weights": _saved_weights,
    "secateurs.models.save_checkpoint": lambda m, t, tmp: sc.models.save_checkpoint(
        m, tmp / "c.pt", "lenet5", t
    ),
    "secateurs.measure.check": lambda m, t, tmp: sc.measure.check(m, example=t.example_inputs()),
    "secateurs.measure.effective_tensors": lambda m, t, tmp: sc.measure.effective_tensors(m),
    "secateurs.measure.executed_macs": lambda m, t, tmp: sc.measure.executed_macs(
        m, t.example_inputs(4)
    ),
    "secateurs.measure.measure_latency": lambda m, t, tmp: sc.measure.measure_latency(
        m, t.example_inputs(), repeats=2, warmup=1
    ),
    "secateurs.measure.profile": lambda m, t, tmp: sc.measure.profile(m, t.example_inputs()),
    "secateurs.measure.trace": lambda m, t, tmp: sc.measure.trace(m, t.example_inputs()),
    "secateurs.graph.load_pruned": _saved_pruning,
    "secateurs.graph.prune_module": lambda m, t, tmp: sc.graph.prune_module(
        m.stem[0], {"out": [0, 1, 2]}
    ),
    "secateurs.graph.pruning_history": lambda m, t, tmp: sc.graph.pruning_history(m),
    "secateurs.graph.remove_layer": lambda m, t, tmp: sc.graph.remove_layer(m, "block"),
    "secateurs.graph.replay": lambda m, t, tmp: sc.graph.replay(
        m, sc.graph.pruning_history(_pruned(t))
    ),
    "secateurs.graph.save_pruned": lambda m, t, tmp: sc.graph.save_pruned(m, tmp / "s.pt"),
    "secateurs.prune.channels": lambda m, t, tmp: sc.prune.channels(
        m, t.example_inputs(), ratio=0.5
    ),
    "secateurs.prune.fix_masks": lambda m, t, tmp: sc.prune.fix_masks(m),
    "secateurs.prune.gate_channels": lambda m, t, tmp: sc.prune.gate_channels(m, ["stem.0"]),
    "secateurs.prune.iterative": lambda m, t, tmp: sc.prune.iterative(
        m, t, steps=1, finetune_epochs=0
    ),
    "secateurs.prune.layers": lambda m, t, tmp: sc.prune.layers(
        m, t.example_inputs(), count=1, data=t
    ),
    "secateurs.prune.learn_masks": lambda m, t, tmp: sc.prune.learn_masks(m, 0.5),
    "secateurs.prune.recalibrate_bn": lambda m, t, tmp: sc.prune.recalibrate_bn(m, t, batches=2),
    "secateurs.prune.removable": lambda m, t, tmp: sc.prune.removable(m, t.example_inputs()),
    "secateurs.prune.sparsify": lambda m, t, tmp: _masked(m),
    "secateurs.prune.sparsity_report": lambda m, t, tmp: sc.prune.sparsity_report(m),
    "secateurs.prune.strip": lambda m, t, tmp: sc.prune.strip(m),
    "secateurs.quant.capture": lambda m, t, tmp: sc.quant.capture(m, t.example_inputs()),
    "secateurs.quant.mixed_precision": lambda m, t, tmp: sc.quant.mixed_precision(m, t, 400),
    "secateurs.quant.prepare_qat": lambda m, t, tmp: sc.quant.prepare_qat(m, t),
    "secateurs.quant.quantize": lambda m, t, tmp: sc.quant.quantize(m, t),
    "secateurs.quant.sensitivity": lambda m, t, tmp: sc.quant.sensitivity(m, t),
    "secateurs.distill.block_outputs": lambda m, t, tmp: sc.distill.block_outputs(m, t),
    "secateurs.distill.classifier_path": lambda m, t, tmp: sc.distill.classifier_path(m),
    "secateurs.distill.distill": lambda m, t, tmp: sc.distill.distill(m, Net(seed=1), t, epochs=1),
    "secateurs.distill.stage_outputs": lambda m, t, tmp: sc.distill.stage_outputs(m, t),
    "secateurs.deploy.export_onnx": lambda m, t, tmp: sc.deploy.export_onnx(
        m, tmp / "m.onnx", example=t.example_inputs()
    ),
    "secateurs.search.abc": lambda m, t, tmp: sc.search.abc(
        m, t, HALF, colony=2, cycles=1, steps=1, finetune_epochs=0, progress=False
    ),
    "secateurs.search.admm": lambda m, t, tmp: sc.search.admm(
        m, t, HALF, epochs=1, finetune_epochs=0, progress=False
    ),
    "secateurs.search.autoprune": lambda m, t, tmp: sc.search.autoprune(
        m, t, HALF, epochs=1, finetune_epochs=0, progress=False
    ),
    "secateurs.search.evaluate_candidate": lambda m, t, tmp: sc.search.evaluate_candidate(
        m, t, {"stem.0": 4}, t.example_inputs()
    ),
    "secateurs.search.greedy_sensitivity": lambda m, t, tmp: sc.search.greedy_sensitivity(
        m, t, HALF, levels=(0.5,), finetune_epochs=0, progress=False
    ),
    "secateurs.search.measure_costs": lambda m, t, tmp: sc.search.measure_costs(
        m, t.example_inputs(), HALF
    ),
    "secateurs.search.metapruning": lambda m, t, tmp: sc.search.metapruning(
        m,
        t,
        HALF,
        epochs=1,
        population=2,
        generations=1,
        parents=1,
        finetune_epochs=0,
        progress=False,
    ),
    "secateurs.search.uniform": lambda m, t, tmp: sc.search.uniform(
        m, t, HALF, finetune_epochs=0, progress=False
    ),
}
PREPARE = {  # calls that need something to act on: masks to strip or to fix
    "secateurs.prune.fix_masks": lambda m: sc.prune.learn_masks(m, 0.5),
    "secateurs.prune.strip": _masked,
    "secateurs.prune.sparsity_report": _masked,
}
# public functions whose first argument is not a float model of their own
NOT_A_MODEL = {
    "secateurs.measure.compare_latency",  # a dict of models, each only run
    "secateurs.distill.kd_loss",  # logits
    "secateurs.distill.rkd_angle",
    "secateurs.distill.rkd_distance",
    "secateurs.deploy.tflite_operators",  # a .tflite file or its bytes
    "secateurs.search.purify",  # one step inside admm, on a search space's gates
}


MODEL_ARGUMENTS = ("model", "module", "student", "models")  # how a first argument is named


@functools.cache
def _model_functions() -> dict[str, object]:
    return {
        name: fn
        for name, fn in public_functions().items()
        if next(iter(inspect.signature(fn).parameters), "") in MODEL_ARGUMENTS
    }


def _state(model: nn.Module):
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return repr(model), model.training, tensors


def _same(a, b) -> bool:
    return (
        a[:2] == b[:2]
        and a[2].keys() == b[2].keys()
        and all(torch.equal(a[2][k], b[2][k]) for k in a[2])
    )


def test_every_public_function_on_a_model_is_called_here():
    assert set(_model_functions()) - NOT_A_MODEL == set(CALLS)


def test_the_mark_and_the_docstring_agree():
    """A call marked in place says so in its first paragraph; no other call says it does."""
    wrong = []
    for name, fn in _model_functions().items():
        first = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        if bool(re.search(r"\bin place\b", first)) != getattr(fn, "in_place", False):
            wrong.append(name)
    assert not wrong


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_call_changes_its_model_exactly_when_marked_in_place(name, digits, tmp_path):
    model = Net()
    if name in PREPARE:
        PREPARE[name](model)
    before = _state(model)
    CALLS[name](model, digits, tmp_path)
    marked = getattr(_model_functions()[name], "in_place", False)
    assert _same(before, _state(model)) != marked, (
        f"{name} {'left its model as it was' if marked else 'changed its model'}"
    )
