"""Layer-wise relevance propagation with the epsilon rule (Bach et al. 2015; as a pruning
criterion, Yeom et al. 2021, arXiv 1912.08881, and Wang et al. 2023).

The relevance of the true class's logit is redistributed layer by layer toward the input:
R_a = a ⊙ ∂/∂a [z · sg(R_z / (z + ε·sign z))] for each linear map z = f(a) (linear,
convolution, pooling, flatten, constant padding, and BatchNorm in eval mode, an affine map
whose shift absorbs relevance like a bias), unchanged through element-wise activations; a
weight's relevance is w ⊙ ∂/∂w of the same product. As a pruning criterion a weight
scores the relevance it passes on in absolute value, summed over samples (each sample's
message a·w·s counted whether it adds to the logit or takes from it; summed with signs,
a weight that matters to many samples in opposite ways would look idle). Weights carrying
little relevance are pruned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PASS_THROUGH = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.GELU,
    nn.SiLU,
)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_MAPS = (
    *WEIGHTED,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.Flatten,
    nn.modules.padding._ConstantPadNd,
    nn.modules.batchnorm._BatchNorm,
)


def chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's leaf layers in order, when it is a plain chain LRP can walk."""
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if ".parametrizations" not in f".{n}"  # masks belong to their layer
        and (isinstance(m, LINEAR_MAPS) or not list(m.children()))
    ]
    for name, m in layers:
        if not isinstance(m, PASS_THROUGH + LINEAR_MAPS):
            raise ValueError(
                f"LRP walks chains of linear, convolution, pooling, padding, BatchNorm, "
                f"flatten and activation layers; '{name}' is a {type(m).__name__}"
            )
    return layers


def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def relevance(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1e-6,
    absolute: bool = False,
):
    """Per-layer input relevances (first is the model input's) and per-weight relevances
    ({layer name: tensor shaped like its weight}) for one batch, summed over it, of the
    model in eval mode. ``absolute``: each sample's (and, in a convolution, each
    position's) relevance through a weight counts by its absolute value,
    |w| ⊙ ∂/∂w [f(|a|) · |s|]."""
    was_training = model.training
    model.eval()  # the inference network: BatchNorm's running statistics, no dropout
    try:
        return _relevance(model, x, target, eps, absolute)
    finally:
        model.train(was_training)


def _weight_forward(m: nn.Module, a: torch.Tensor, w: torch.Tensor, bias) -> torch.Tensor:
    return F.linear(a, w, bias) if isinstance(m, nn.Linear) else m._conv_forward(a, w, bias)  # type: ignore[operator]


def _relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float, absolute: bool):
    if isinstance(x, (tuple, list)):
        raise ValueError(
            "LRP walks plain chains of one input; this model takes several, so "
            "use importance 'magnitude' or 'taylor'"
        )
    layers = chain(model)
    activations = [x]
    try:
        with torch.no_grad():
            for _, m in layers:
                activations.append(m(activations[-1]))
            is_chain = torch.allclose(model(x), activations[-1], rtol=1e-4, atol=1e-4)
    except RuntimeError:  # a layer met an input of the wrong shape
        is_chain = False
    if not is_chain:
        raise ValueError(
            "LRP walks plain chains, but this model's forward is not its layers one after "
            "another (a residual or branching model?); use importance 'magnitude' or 'taylor'"
        )
    logits = activations[-1]
    r = torch.zeros_like(logits).scatter_(
        1, target.view(-1, 1), logits.gather(1, target.view(-1, 1))
    )
    per_layer, weights = [r], {}
    for (name, m), a in zip(reversed(layers), reversed(activations[:-1])):
        if isinstance(m, PASS_THROUGH):
            per_layer.append(r)
            continue
        a = a.detach().requires_grad_(True)
        with torch.enable_grad():
            inputs = [a]
            if isinstance(m, WEIGHTED):  # the weight as used (masks applied), taken once
                w = m.weight
                inputs.append(w)
                z = _weight_forward(m, a, w, m.bias)
            else:
                z = m(a)
            s = (r / _stabilize(z, eps)).detach()
            grads = torch.autograd.grad((z * s).sum(), inputs)
            if absolute and len(grads) > 1:  # sum of |a·w·s| over samples and positions
                flow = (_weight_forward(m, a.detach().abs(), w, None) * s.abs()).sum()
                grads = (grads[0], torch.autograd.grad(flow, w)[0])
        r = (a * grads[0]).detach()
        if len(grads) > 1:
            w = m.weight.detach()  # type: ignore[operator]
            weights[name] = ((w.abs() if absolute else w) * grads[1]).detach()
        per_layer.append(r)
    return list(reversed(per_layer)), weights


def weight_relevance(model: nn.Module, batches, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """The relevance every weight passes on, in absolute value per sample, summed over the
    calibration batches (``relevance(..., absolute=True)``)."""
    totals: dict[str, torch.Tensor] = {}
    for x, y in batches:
        _, weights = relevance(model, x, y, eps, absolute=True)
        for name, w in weights.items():
            totals[name] = totals.get(name, 0) + w
    return totals
