"""Constant channels folded into the layers that read them: exact integer rewrites.

A convolution filter with every weight zero outputs one value everywhere: its requantized
bias, clamped. Pruning leaves many such filters (at 90% filterlet sparsity a 1x1
convolution keeps about one filter in ten), and the layer that reads that channel need
not store or multiply its weights for it:

- a constant equal to the input zero point contributes ``(x - z_x) * w = 0`` everywhere,
  padding included (padding is the zero point), so those weights are zeroed;
- any other constant ``v`` contributes ``(v - z_x) * sum(w)`` to each output, exactly, when
  the convolution has no padding (every output then reads the whole kernel), so that sum
  goes into the int32 bias and the weights are zeroed.

A filter left with no weight outputs a constant too, so one pass in graph order carries
the rewrite down a chain (a depthwise channel fed the zero point by a pruned pointwise
filter becomes constant itself). Every output stays equal to ``run_int8``'s: the sums are
exact integers and the bias stays in int32 or the channel is left alone.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .fixedpoint import multiply_by_quantized_multiplier as mbqm
from .integer import LayerConsts, activation_range

INT32 = (-(2**31), 2**31 - 1)


def constant_outputs(c: LayerConsts, node, qparams) -> dict[int, int]:
    """Output channel -> its int8 value, for each filter of ``c`` with no weight left."""
    empty = (c.weight.flatten(1) == 0).all(1)
    if not bool(empty.any()):
        return {}
    yq = qparams[node.outputs[0]]
    lo, hi = activation_range(node.attrs["act"], yq)
    values = mbqm(c.bias[empty], c.multiplier[empty], c.shift[empty]) + yq.zero_point
    channels = empty.nonzero().flatten().tolist()
    return dict(zip(channels, values.clamp(lo, hi).tolist()))


def fold_constant_channels(qmodel) -> dict[int, LayerConsts]:
    """Every layer's constants (``qmodel.layers``), with each convolution's weights for
    constant input channels zeroed and their contribution folded into its bias."""
    layers = dict(qmodel.layers)
    constants: dict[int, dict[int, int]] = {}  # value id -> {channel: int8 value}
    for index, node in enumerate(qmodel.graph.nodes):
        if node.kind != "conv":
            continue
        c = layers[index]
        known = constants.get(node.inputs[0])
        if known:
            c = _fold(c, node, known, qmodel.qparams[node.inputs[0]].zero_point)
            layers[index] = c
        found = constant_outputs(c, node, qmodel.qparams)
        if found:
            constants[node.outputs[0]] = found
    return layers


def _fold(c: LayerConsts, node, known: dict[int, int], in_zp: int) -> LayerConsts:
    unpadded = all(p == 0 for pair in node.attrs["padding"] for p in pair)
    cout, cin_g = c.weight.shape[:2]
    cout_g = cout // node.attrs["groups"]
    weight, bias = c.weight.clone(), c.bias.clone()
    for channel, value in known.items():
        offset = value - in_zp
        if offset and not unpadded:
            continue  # the border reads padding, not the constant: not one sum
        group, j = divmod(channel, cin_g)
        rows = slice(group * cout_g, (group + 1) * cout_g)
        folded = bias[rows] + offset * weight[rows, j].flatten(1).sum(1)
        if bool((folded < INT32[0]).any() or (folded > INT32[1]).any()):
            continue
        bias[rows] = folded
        weight[rows, j] = 0
    if torch.equal(weight, c.weight):
        return c
    return replace(c, weight=weight, bias=bias)
