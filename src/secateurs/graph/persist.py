"""Save and reload pruned models: the state dict plus the surgery that shaped it."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .._checks import in_place
from ..models.checkpoint import atomic_save, load_versioned
from .graph import pruning_history, replay

FORMAT = "secateurs.pruned/1"


def save_pruned(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s weights and pruning history atomically to ``path``."""
    atomic_save(
        {"format": FORMAT, "history": pruning_history(model), "state_dict": model.state_dict()},
        path,
    )


@in_place
def load_pruned(model: nn.Module, path: str | Path) -> nn.Module:
    """Replay the pruning saved at ``path`` (by ``save_pruned``) on ``model`` (freshly
    built, unpruned) and load the weights, in place; returns ``model``."""
    data = load_versioned(path, FORMAT, "secateurs pruned model")
    if pruning_history(model):
        raise ValueError("load_pruned needs a freshly built model, but this one is pruned already")
    replay(model, data["history"])
    model.load_state_dict(data["state_dict"])
    return model
