"""Prune with channels zeroed first: the pruned model must compute what the zeroed one did."""

import copy

import torch

import secateurs as sc
from secateurs.graph import DependencyGraph
from secateurs.graph.tracer import param_axis


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics, so that removed channels would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def prune_and_compare(model, inputs, ratio=0.4, seed=0, importance="random", scope="local"):
    """Zero the planned channels, record outputs, prune, and compare; returns a summary."""
    model = model.eval()
    inputs = as_tuple(inputs)
    graph = DependencyGraph(model, inputs)
    plan = sc.prune.plan(graph, ratio, importance=importance, scope=scope, seed=seed)
    macs_before = sc.measure.profile(model, inputs, latency=False).macs
    graph.zero(plan)
    with torch.no_grad():
        expected = as_tuple(model(*inputs))
    history = graph.keep_indices(plan)
    graph.prune(plan)
    with torch.no_grad():
        got = as_tuple(model(*inputs))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert e.shape == g.shape  # outputs keep their dimensions
        assert torch.allclose(e, g, atol=1e-5, rtol=1e-4), float((e - g).abs().max())
    _assert_shapes_follow_history(model, history)
    out = model(*[t.clone().requires_grad_(t.is_floating_point()) for t in inputs])
    sum(o.sum() for o in as_tuple(out)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    macs_after = sc.measure.profile(model, inputs, latency=False).macs
    removed = sum(len(v) for v in plan.values())
    return {"removed": removed, "macs_before": macs_before, "macs_after": macs_after}


def _assert_shapes_follow_history(model, history):
    modules = dict(model.named_modules())
    attrs = {
        "in": ("in_channels", "in_features", "input_size"),
        "out": ("out_channels", "out_features"),
        "chan": ("num_features", "num_channels", "num_parameters"),
        "embed": ("embed_dim",),
    }
    for step in history:
        m = modules[step["module"]]
        for axis, keep in step["keep"].items():
            if axis.startswith("param:"):
                t, dim = param_axis(m, axis)
                assert t.shape[dim] == len(keep)
                continue
            if axis == "hidden":  # every layer and direction of a recurrent layer
                cells = m.num_layers * (2 if m.bidirectional else 1)
                assert m.hidden_size * cells == len(keep), step["module"]
                continue
            if axis == "heads":  # whole heads of an attention layer
                assert m.num_heads * m.head_dim == len(keep), step["module"]
                assert m.out_proj.in_features == len(keep), step["module"]
                continue
            values = [getattr(m, a) for a in attrs[axis] if hasattr(m, a)]
            assert values and values[0] == len(keep), (step["module"], axis)


def fresh_copy(model):
    return copy.deepcopy(model)
