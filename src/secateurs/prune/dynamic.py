"""Input-dependent dynamic channel gating (surveyed by Zhang et al. 2021; gates as in Gao et
al. 2019, "Dynamic Channel Pruning: Feature Boosting and Suppression", arXiv 1810.05331).

A small gate reads a layer's input, predicts which of its output channels matter for this
input, and the others are set to zero; a kernel that skips them does less work on easy
inputs. ``sc.measure.executed_macs`` reports the MACs actually needed per input.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_float, in_place
from ..train import LossTerm, Step


class ChannelGate(nn.Module):
    """Global average pool, Linear, sigmoid: one open/closed decision per output channel.

    Open where the probability exceeds ``threshold`` (a threshold of 0 keeps every channel,
    the dense model); training passes gradients through the decision (straight-through).
    ``active`` holds the fraction of open channels per input of the last call.
    """

    def __init__(self, in_channels: int, out_channels: int, threshold: float = 0.5) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, out_channels)
        nn.init.constant_(self.fc.bias, 1.0)  # gates start open (p = 0.73)
        self.threshold = threshold
        self.active: torch.Tensor | None = None
        self.probability: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(2) if x.dim() > 2 else x
        p = torch.sigmoid(self.fc(pooled))
        hard = (p > self.threshold).to(p.dtype)
        self.active, self.probability = hard.mean(1).detach(), p
        return hard + (p - p.detach()) if self.training else hard


def _apply_gate(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    gate = module.gate
    assert isinstance(gate, ChannelGate)
    mask = gate(args[0])
    return output * mask.view(*mask.shape, *([1] * (output.dim() - 2)))


@in_place
def gate_channels(
    model: nn.Module, layers: list[str], *, threshold: float = 0.5
) -> list[ChannelGate]:
    """Give each convolution of ``model`` named in ``layers`` a :class:`ChannelGate` on its
    output channels (in place); a channel runs where its gate's probability exceeds
    ``threshold``.

    The gate is a child module (``<layer>.gate``), so it trains with ``sc.fit`` and travels in
    the state dict; call this again on a fresh model before loading one.
    """
    threshold = check_float("threshold", threshold, minimum=0.0, maximum=1.0)
    modules = dict(model.named_modules())
    gates = []
    for path in layers:
        conv = modules.get(path)
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d)):
            found = type(conv).__name__ if conv is not None else "nothing"
            raise ValueError(f"gate_channels gates convolutions; '{path}' is {found}")
        if hasattr(conv, "gate"):
            raise ValueError(f"'{path}' is gated already")
        conv.gate = ChannelGate(conv.in_channels, conv.out_channels, threshold)
        conv.register_forward_hook(_apply_gate)
        gates.append(conv.gate)
    return gates


class GateBudget(LossTerm):
    """Pushes the mean gate probability of the gated layers down to ``target`` (the fraction
    of channels to compute on average): weight · Σ relu(mean p - target)."""

    name = "gate_budget"

    def __init__(self, gates: list[ChannelGate], target: float = 0.5, weight: float = 1.0):
        self.gates = list(gates)
        self.target = check_float("target", target, minimum=0.0, maximum=1.0)
        self.weight = check_float("weight", weight, minimum=0.0)

    def __call__(self, step: Step) -> torch.Tensor:
        total = torch.zeros(())
        for g in self.gates:
            assert g.probability is not None, "the gates run in the forward pass first"
            total = total + torch.relu(g.probability.mean() - self.target)
        return self.weight * total
