"""Unstructured and semi-structured sparsity: masks on weights, kept exactly zero.

Masks are ``torch.nn.utils.parametrize`` parametrizations, so the model stays a plain
``nn.Module``: the weight a layer uses is ``original * mask``, zero where masked through
training, and the masks travel in the state dict. ``strip`` bakes them in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .._checks import check_choice, check_finite_model, check_float, check_int, in_place
from ..data.task import call
from ..train import Callback, FitState
from .calibration import batches
from .lrp import weight_relevance

IMPORTANCES = ("magnitude", "taylor", "lrp", "lrp_magnitude", "random")
SCOPES = ("global", "local", "lamp")
LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


class WeightMask(nn.Module):
    """The parametrization: ``weight = original * mask`` (mask of 0s and 1s, a buffer)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _mask_of(module: nn.Module) -> WeightMask | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations["weight"]:
            if isinstance(p, WeightMask):
                return p
    return None


def _layers(model: nn.Module, ignored: Iterable[str]) -> dict[str, nn.Module]:
    ignored = set(ignored)
    modules = dict(model.named_modules())
    unknown = ignored - set(modules)
    if unknown:
        raise ValueError(f"ignored names modules {sorted(unknown)} that the model does not have")
    return {n: m for n, m in modules.items() if isinstance(m, LAYERS) and n not in ignored}


def _granularity(text: str) -> tuple[str, tuple[int, int] | None]:
    match = re.fullmatch(r"(\d+):(\d+)", text) if isinstance(text, str) else None
    if match:
        n, m = int(match[1]), int(match[2])
        if not 0 < n < m:
            raise ValueError(f"granularity '{text}' must be N:M with 0 < N < M, such as '2:4'")
        return "n:m", (n, m)
    check_choice("granularity", text, ("weight", "filterlet", "block", "N:M such as '2:4'"))
    return text, None


def _units(weight: torch.Tensor, granularity: str, is_conv: bool, block: int):
    """View the weight as (units x elements per unit): a function from per-weight scores to
    per-unit scores, and its inverse from a per-unit keep mask to a per-weight mask."""
    shape = weight.shape
    if granularity == "filterlet" and is_conv and weight.dim() >= 3:
        # one unit per (filter, kernel position): the input-channel vector there
        def to_units(x):
            return x.flatten(2).sum(1)  # out x positions

        def to_weights(keep):
            return keep.unsqueeze(1).expand(shape[0], shape[1], -1).reshape(shape)

        return to_units, to_weights
    if granularity == "block":
        rows, cols = shape[0], weight[0].numel()
        pad = (0, -cols % block, 0, -rows % block)

        def to_units(x):
            x = F.pad(x.reshape(rows, cols), pad)
            return x.reshape(x.shape[0] // block, block, x.shape[1] // block, block).sum((1, 3))

        def to_weights(keep):
            full = keep.repeat_interleave(block, 0).repeat_interleave(block, 1)
            return full[:rows, :cols].reshape(shape)

        return to_units, to_weights
    return (lambda x: x), (lambda keep: keep)  # single weights


def _scores(model, layers, importance, data, seed, exponent=0.5) -> dict[str, torch.Tensor]:
    """Per weight: |w| (masked weights score 0), |w·dL/dw| over calibration batches, LRP
    relevance, relevance^exponent·|w|^(1 - exponent), or random."""
    weights = {n: m.weight.detach() for n, m in layers.items()}  # effective: masked are 0
    if importance == "magnitude":
        return {n: w.abs() for n, w in weights.items()}
    if importance == "random":
        g = torch.Generator().manual_seed(seed)
        return {n: torch.rand(w.shape, generator=g) * (w != 0) for n, w in weights.items()}
    if importance in ("lrp", "lrp_magnitude"):
        relevances = weight_relevance(model, batches(data))
        if importance == "lrp_magnitude":  # a weighted geometric mean of relevance and |w|
            return {
                n: _blend(relevances[n].clamp_min(0), weights[n].abs(), exponent) for n in layers
            }
        return {n: relevances[n] * (weights[n] != 0) for n in layers}
    totals = {n: torch.zeros_like(w) for n, w in weights.items()}
    was_training = model.training
    model.eval()
    try:
        for x, y in batches(data):
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                outputs = {}
                hooks = [
                    m.register_forward_hook(
                        lambda mod, a, o, n=n, out=outputs: out.__setitem__(n, mod.weight)
                    )
                    for n, m in layers.items()
                ]
                loss = F.cross_entropy(call(model, x), y)
                for h in hooks:
                    h.remove()
                effective = [outputs[n] for n in layers]
                grads = torch.autograd.grad(loss, effective, allow_unused=True)
            for n, w, g in zip(layers, effective, grads):
                if g is not None:
                    totals[n] += (w.detach() * g).abs()
    finally:
        model.train(was_training)
    return totals


def _blend(relevance: torch.Tensor, magnitude: torch.Tensor, exponent: float) -> torch.Tensor:
    if exponent == 0.5:  # the default, the geometric mean, as one square root
        return (relevance * magnitude).sqrt()
    return relevance**exponent * magnitude ** (1 - exponent)


def _check_exponent(importance: str, exponent) -> float:
    exponent = check_float("relevance_exponent", exponent, minimum=0.0, maximum=1.0)
    if exponent != 0.5 and importance != "lrp_magnitude":
        raise ValueError(
            f"relevance_exponent weighs relevance against magnitude in importance "
            f"'lrp_magnitude'; importance '{importance}' does not use it"
        )
    return exponent


@in_place
def sparsify(
    model: nn.Module,
    *,
    sparsity: float | None = None,
    importance: str = "magnitude",
    scope: str = "global",
    granularity: str = "weight",
    ignored: Iterable[str] = (),
    data=None,
    seed: int = 0,
    block_size: int = 4,
    relevance_exponent: float = 0.5,
) -> SparsityReport:
    """Mask the least important weights of every convolution and linear layer (in place).

    ``sparsity``: the fraction of weights zeroed, by ``scope``: over all layers together
    (``"global"``), in each layer (``"local"``), or over all layers ranked by LAMP scores
    (``"lamp"``, Lee et al. 2021, arXiv 2010.07611: each layer's scores normalized so that
    layers of any scale compete fairly). ``granularity``: single weights, filterlets (the
    input-channel vector at one kernel position of one filter; DTMM, arXiv 2401.09068),
    ``"N:M"`` (N kept
    in every M consecutive input weights; the sparsity is then 1 - N/M), or square blocks of
    ``block_size``. Calling it again on a masked model raises the sparsity: masked weights
    score zero and stay masked. ``relevance_exponent`` (``"lrp_magnitude"`` only): p in
    the score relevance^p·|w|^(1 - p); 0.5, the geometric mean, by default, 1 ranks as
    ``"lrp"`` and 0 as ``"magnitude"``. ``model`` keeps its ``ignored`` layers dense;
    ``importance`` ranks weights (magnitude, taylor, lrp, lrp_magnitude, random; ``data``
    feeds the data-driven ones); ``seed`` fixes the random ranking.
    """
    check_finite_model(model, "sparsify")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kind, nm = _granularity(granularity)
    if kind == "n:m":
        implied = 1 - nm[0] / nm[1]
        if sparsity is not None and not math.isclose(sparsity, implied):
            raise ValueError(
                f"granularity '{granularity}' fixes the sparsity at {implied}; got {sparsity}"
            )
        sparsity = implied
    if sparsity is None:
        raise ValueError("sparsity is required (the fraction of weights to zero, in [0, 1))")
    sparsity = check_float("sparsity", sparsity, minimum=0.0)
    if sparsity >= 1:
        raise ValueError(f"sparsity is the fraction of weights zeroed, in [0, 1); got {sparsity}")
    check_choice("importance", importance, IMPORTANCES)
    check_choice("scope", scope, SCOPES)
    block_size = check_int("block_size", block_size, minimum=1)
    relevance_exponent = _check_exponent(importance, relevance_exponent)
    layers = _layers(model, ignored)
    if not layers:
        raise ValueError("the model has no convolution or linear layer to sparsify")
    with torch.no_grad():
        scores = _scores(model, layers, importance, data, seed, relevance_exponent)
        masks = {}
        if kind == "n:m":
            for n in layers:
                masks[n] = _n_of_m(scores[n], *nm)
        else:
            views = {
                n: _units(m.weight, kind, isinstance(m, nn.modules.conv._ConvNd), block_size)
                for n, m in layers.items()
            }
            unit_scores = {n: views[n][0](scores[n]) for n, m in layers.items()}
            sizes = {n: layers[n].weight.numel() / unit_scores[n].numel() for n in layers}
            keep = _keep(unit_scores, sizes, sparsity, scope)
            masks = {n: views[n][1](keep[n]).to(layers[n].weight.dtype) for n in layers}
        for n, m in layers.items():
            existing = _mask_of(m)
            if existing is None:
                parametrize.register_parametrization(m, "weight", WeightMask(masks[n]))
            else:
                existing.mask.copy_(masks[n] * existing.mask)
    return sparsity_report(model)


def lamp_scores(scores: torch.Tensor) -> torch.Tensor:
    """LAMP (Lee et al. 2021, arXiv 2010.07611) of one layer's ``scores``: each score
    squared over the sum of the squares of every score in its layer at least as large.
    Ranking these globally sets per-layer sparsities that no layer's scale can skew (conv
    weights before a BatchNorm have none of their own), and the layer's largest unit scores
    1, so no layer is emptied."""
    flat = scores.flatten().double().square()
    order = torch.argsort(flat, stable=True)
    ranked = flat[order]
    tail = torch.flip(torch.cumsum(torch.flip(ranked, [0]), 0), [0])  # sum over ranks >= i
    out = torch.empty_like(flat)
    out[order] = ranked / tail.clamp_min(torch.finfo(torch.float64).tiny)
    return out.reshape(scores.shape)


def _keep(unit_scores, sizes, sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep masks over units: zero the lowest-scoring units until ``sparsity`` of the weights."""
    keep = {}
    if scope == "lamp":
        unit_scores = {n: lamp_scores(s) for n, s in unit_scores.items()}
    if scope == "local":
        for n, s in unit_scores.items():
            flat = s.flatten()
            count = int(round(sparsity * flat.numel()))
            mask = torch.ones_like(flat, dtype=torch.bool)
            mask[torch.argsort(flat, stable=True)[:count]] = False
            keep[n] = mask.reshape(s.shape)
        return keep
    names = list(unit_scores)
    flat = torch.cat([unit_scores[n].flatten() for n in names])
    size = torch.cat(
        [torch.full((unit_scores[n].numel(),), sizes[n], dtype=torch.float64) for n in names]
    )
    order = torch.argsort(flat, stable=True)
    target = torch.tensor(sparsity * float(size.sum()), dtype=torch.float64)
    # every unit whose cumulative size stays within the target (rounded to the nearest weight)
    count = int(torch.searchsorted(torch.cumsum(size[order], 0), target.round(), right=True))
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[order[:count]] = False
    start = 0
    for n in names:
        k = unit_scores[n].numel()
        keep[n] = mask[start : start + k].reshape(unit_scores[n].shape)
        start += k
    return keep


def _n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest of every m consecutive weights along the input dimension."""
    w = scores.flatten(2) if scores.dim() > 2 else scores.unsqueeze(-1)  # out x in x positions
    w = w.transpose(1, 2)  # out x positions x in
    cin = w.shape[-1]
    pad = -cin % m
    padded = F.pad(w, (0, pad), value=-1.0)
    groups = padded.reshape(*padded.shape[:-1], -1, m)
    top = groups.topk(n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    keep = keep.reshape(*padded.shape[:-1], -1)[..., :cin].transpose(1, 2)
    return keep.reshape(scores.shape).to(scores.dtype)


@in_place
def strip(model: nn.Module) -> nn.Module:
    """Bake every mask of ``model`` into its weight and remove the parametrizations (in place)."""
    for module in model.modules():
        if _mask_of(module) is not None:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Zeros per convolution and linear weight, and over all of them."""

    layers: tuple[LayerSparsity, ...]

    @property
    def sparsity(self) -> float:
        total = sum(layer.numel for layer in self.layers)
        return sum(layer.zeros for layer in self.layers) / total if total else 0.0

    def __str__(self) -> str:
        return f"{self.sparsity:.1%} of {sum(x.numel for x in self.layers):,} weights are zero"


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-layer and total sparsity of the weights the layers of ``model`` use (masks applied)."""
    with torch.no_grad():
        return SparsityReport(
            tuple(
                LayerSparsity(n, m.weight.numel(), int((m.weight == 0).sum()))
                for n, m in model.named_modules()
                if isinstance(m, LAYERS)
            )
        )


class SparsitySchedule(Callback):
    """Raise the sparsity during ``sc.fit``, at the start of chosen epochs.

    ``one_shot(s, epoch)``: all at once; ``iterative(s, steps, every)``: equal steps (Han et
    al. 2015, arXiv 1506.02626); ``gradual(s_i, s_f, t0, n)``: Zhu & Gupta's polynomial
    s_t = s_f + (s_i - s_f)(1 - (t - t0)/n)^3 for epochs t0..t0+n (arXiv 1710.01878).
    ``kwargs`` go to :func:`sparsify`.
    """

    def __init__(self, targets: dict[int, float], **kwargs) -> None:
        self.targets = dict(targets)
        self.kwargs = kwargs
        self.applied: list[tuple[int, float]] = []

    @classmethod
    def one_shot(cls, sparsity: float, epoch: int = 1, **kwargs) -> SparsitySchedule:
        return cls({epoch: sparsity}, **kwargs)

    @classmethod
    def iterative(cls, sparsity: float, steps: int, every: int = 1, start: int = 1, **kwargs):
        steps = check_int("steps", steps, minimum=1)
        return cls({start + k * every: sparsity * (k + 1) / steps for k in range(steps)}, **kwargs)

    @classmethod
    def gradual(cls, initial: float, final: float, start: int = 1, epochs: int = 5, **kwargs):
        epochs = check_int("epochs", epochs, minimum=1)
        return cls(
            {
                start + t: final + (initial - final) * (1 - t / epochs) ** 3
                for t in range(epochs + 1)
            },
            **kwargs,
        )

    def on_epoch_start(self, state: FitState) -> None:
        if state.epoch in self.targets:
            target = self.targets[state.epoch]
            sparsify(state.model, sparsity=target, **self.kwargs)
            self.applied.append((state.epoch, target))


class LearnedMask(nn.Module):
    """A learnable score per weight; the layer uses the weights whose scores are in the top
    ``1 - sparsity`` of its layer, through a straight-through estimator: the forward pass
    applies the binary mask, the backward pass gives the scores the gradient a soft mask
    would get (mask learning; Wang et al. 2023, in the manner of Ramanujan et al. 2020,
    arXiv 1911.13299)."""

    def __init__(
        self, weight: torch.Tensor, sparsity: float, scores: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.sparsity = sparsity
        start = weight.detach().abs() if scores is None else scores.detach().to(weight.dtype)
        self.scores = nn.Parameter(start.clone())

    def hard_mask(self) -> torch.Tensor:
        flat = self.scores.detach().flatten()
        count = int(round(self.sparsity * flat.numel()))
        mask = torch.ones_like(flat)
        mask[torch.argsort(flat, stable=True)[:count]] = 0
        return mask.reshape(self.scores.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        hard = self.hard_mask()
        return weight * (hard + (self.scores - self.scores.detach()))  # exactly hard, forward


@in_place
def learn_masks(
    model: nn.Module,
    sparsity: float,
    *,
    ignored: Iterable[str] = (),
    scope: str = "lamp",
    importance: str = "magnitude",
    data=None,
    seed: int = 0,
    relevance_exponent: float = 0.5,
) -> nn.Module:
    """Attach a :class:`LearnedMask` to every convolution and linear weight of ``model`` but
    the ``ignored`` layers (in place; ``seed`` for the random scores); train
    with ``sc.fit`` (weights and scores learn together), then :func:`fix_masks`.

    ``importance`` (as in :func:`sparsify`, with ``relevance_exponent``; ``data`` for the
    data-driven ones) gives the scores the masks start from: ``"lrp"`` or
    ``"lrp_magnitude"`` make it LRP-driven mask learning (Wang et al. 2023). Each layer's
    scores are rescaled to the mean magnitude of its weights, so the optimizer moves them
    at the same pace whatever the importance.
    ``scope`` sets each layer's share of the zeros from those scores, and the share stays
    fixed while the masks learn which weights they are: ``"local"`` gives every layer
    ``sparsity``; ``"lamp"`` (the default) gives each layer the share that LAMP ranking of
    the scores would (Lee et al. 2021, arXiv 2010.07611), so small layers such as a first
    convolution keep more of their weights; ``"global"`` ranks the raw scores across layers.
    """
    sparsity = check_float("sparsity", sparsity, minimum=0.0)
    if sparsity >= 1:
        raise ValueError(f"sparsity is the fraction of weights zeroed, in [0, 1); got {sparsity}")
    check_choice("scope", scope, SCOPES)
    check_choice("importance", importance, IMPORTANCES)
    relevance_exponent = _check_exponent(importance, relevance_exponent)
    layers = _layers(model, ignored)
    if not layers:
        raise ValueError(
            f"learn_masks found no convolution or linear layer in {type(model).__name__} "
            "outside `ignored`; leave at least one layer to mask"
        )
    for module in layers.values():
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError("learn_masks needs weights without masks; strip the model first")
    with torch.no_grad():
        scores = _scores(model, layers, importance, data, seed, relevance_exponent)
    keep = _keep(scores, dict.fromkeys(layers, 1), sparsity, scope)
    for name, module in layers.items():
        share = 1.0 - float(keep[name].double().mean())
        start = scores[name].clamp_min(0)
        if float(start.mean()) > 0:
            start = start * (module.weight.detach().abs().mean() / start.mean())
        mask = LearnedMask(module.weight, share, start)
        parametrize.register_parametrization(module, "weight", mask)
    return model


@in_place
def fix_masks(model: nn.Module) -> nn.Module:
    """Replace every learned mask of ``model`` by the fixed binary mask it has learned (a
    WeightMask), in place: at the same position among the weight's parametrizations, any
    other parametrization staying. Returns ``model``."""
    for module in model.modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        chain = list(module.parametrizations["weight"])
        if not any(isinstance(p, LearnedMask) for p in chain):
            continue
        chain = [WeightMask(p.hard_mask()) if isinstance(p, LearnedMask) else p for p in chain]
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for p in chain:
            parametrize.register_parametrization(module, "weight", p)
    return model
