"""Dependency-graph speed and correctness, secateurs beside Torch-Pruning, in one run.

For each model: the wall time of building the graph, and of building it and removing 50% of
the channels by L1 norm (median of repeats); then a correctness check for each tool: zero
the weights of every channel it will remove, record the outputs, prune, and compare. A
correct pruner leaves the outputs unchanged (max difference ~1e-6).

    pip install torch-pruning   # for this benchmark only
    python benchmarks/graph_speed.py [--repeats 9] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import has_torch_pruning, machine, save_json
from torch import nn

import secateurs as sc
from secateurs.data.task import Task, tensor_dataset
from secateurs.graph import DependencyGraph

RESULTS = Path(__file__).parent / "results" / "graph_speed.json"


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = mid * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """ResNet-50 (He et al. 2016): 3-4-6-3 bottlenecks, 25.6 M parameters at 224x224."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], 64
        for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, mid, stride if i == 0 else 1))
                cin = mid * 4
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def _task(shape, classes=10) -> Task:
    x = torch.randn(4, *shape).numpy()
    ds = tensor_dataset(x, [i % classes for i in range(4)])
    return Task("bench", "image", ds, ds, ds, shape, classes)


def models(quick: bool):
    cifar = _task((3, 32, 32))
    out = {
        "mobilenet_v2": (lambda: sc.models.create("mobilenet_v2", cifar, seed=0), (1, 3, 32, 32)),
        "shufflenet_v2": (lambda: sc.models.create("shufflenet_v2", cifar, seed=0), (1, 3, 32, 32)),
        "resnet8": (lambda: sc.models.create("resnet8", cifar, seed=0), (1, 3, 32, 32)),
    }
    if not quick:
        out["resnet50_224"] = (ResNet50, (1, 3, 224, 224))
    return out


def _randomize_norms(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _compare(build, ours, theirs, repeats):
    """Median seconds of ``ours(model)`` and ``theirs(model)`` over ``repeats`` interleaved
    calls, each on a freshly built model (built outside the timer), after one warm-up call
    of each; None for a tool that fails on the model."""
    fns = {"ours": ours, "theirs": theirs}
    for key, fn in list(fns.items()):
        try:
            fn(build().eval())
        except Exception as err:
            print(f"  {key} failed: {type(err).__name__}: {err}")
            fns[key] = None
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(repeats):
        for key, fn in fns.items():
            if fn is not None:
                model = build().eval()
                start = time.perf_counter()
                fn(model)
                times[key].append(time.perf_counter() - start)
    return tuple(
        (statistics.median(times[k]), min(times[k])) if times[k] else (None, None)
        for k in ("ours", "theirs")
    )


# --- secateurs -----------------------------------------------------------------------------


def ours_build(model, x):
    DependencyGraph(model, x)


def ours_prune(model, x):
    graph = DependencyGraph(model, x)
    graph.prune(sc.prune.plan(graph, 0.5, importance="l1"))


def ours_check(build, x) -> float:
    model = build().eval()
    _randomize_norms(model)
    graph = DependencyGraph(model, x)
    plan = sc.prune.plan(graph, 0.5, importance="l1")
    graph.zero(plan)
    with torch.no_grad():
        expected = model(x)
    graph.prune(plan)
    with torch.no_grad():
        return float((model(x) - expected).abs().max())


# --- Torch-Pruning ---------------------------------------------------------------------------


def _classifier(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]


def tp_build(model, x):
    import torch_pruning as tp

    tp.DependencyGraph().build_dependency(model, example_inputs=x)


def _tp_pruner(model, x):
    import torch_pruning as tp

    return tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=_classifier(model),
    )


def tp_prune(model, x):
    _tp_pruner(model, x).step()


@torch.no_grad()
def _zero(module, handler: str, idxs):
    idxs = torch.as_tensor(idxs, dtype=torch.long)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        for t in (module.weight, module.bias, module.running_mean):
            t[idxs] = 0
    elif isinstance(module, (nn.Conv2d, nn.Linear)):
        groups = getattr(module, "groups", 1)
        if "out" in handler or groups > 1:  # depthwise: input and output channels coincide
            module.weight[idxs] = 0
            if module.bias is not None:
                module.bias[idxs] = 0
        else:
            module.weight[:, idxs] = 0


def tp_check(build, x) -> float:
    """Zero what Torch-Pruning removes (on a copy), prune, compare the outputs."""
    model = build().eval()
    _randomize_norms(model)
    reference = copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    ref_modules = dict(reference.named_modules())
    for group in _tp_pruner(model, x).step(interactive=True):
        for dep, idxs in group:
            module = dep.target.module
            if id(module) in names:
                _zero(ref_modules[names[id(module)]], dep.handler.__name__, idxs)
        group.prune()
    with torch.no_grad():
        try:
            return float((model(x) - reference(x)).abs().max())
        except RuntimeError:
            return float("inf")  # the pruned model no longer runs


def _fmt(value, spec=".3f"):
    return "failed" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="skip the 224x224 ResNet-50")
    args = parser.parse_args(argv)
    if not has_torch_pruning():
        return 2
    torch.set_num_threads(1)
    rows = []
    for name, (build, shape) in models(args.quick).items():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        row = {"model": name, "input": list(shape)}
        for step, ours_fn, tp_fn in (
            ("build", ours_build, tp_build),
            ("prune", ours_prune, tp_prune),
        ):
            (o_med, o_min), (t_med, t_min) = _compare(
                build,
                lambda m, f=ours_fn, x=x: f(m, x),
                lambda m, f=tp_fn, x=x: f(m, x),
                args.repeats,
            )
            row[f"ours_{step}_s"], row[f"tp_{step}_s"] = o_med, t_med
            row[f"ours_{step}_best_s"], row[f"tp_{step}_best_s"] = o_min, t_min
            row[f"{step}_speedup"] = t_med / o_med if o_med and t_med else None
            row[f"{step}_speedup_best"] = t_min / o_min if o_min and t_min else None
        row["ours_max_error"] = ours_check(build, x)
        try:
            row["tp_max_error"] = tp_check(build, x)
        except Exception as err:
            row["tp_max_error"] = None
            row["tp_error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
        parts = [f"{name:14s}"]
        for step, label in (("build", "build"), ("prune", "build+prune")):
            parts.append(
                f"{label} {_fmt(row[f'ours_{step}_s'])} vs {_fmt(row[f'tp_{step}_s'])} s "
                f"(x{_fmt(row[f'{step}_speedup'], '.2f')}, "
                f"best x{_fmt(row[f'{step}_speedup_best'], '.2f')})"
            )
        errors = f"{_fmt(row['ours_max_error'], '.1e')} vs {_fmt(row['tp_max_error'], '.1e')}"
        print("  ".join([*parts, f"max output error {errors}"]))
    result = {
        "benchmark": "graph_speed",
        "command": "python benchmarks/graph_speed.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "torch_pruning": importlib.metadata.version("torch-pruning"),
        "secateurs": sc.__version__,
        "ratio": 0.5,
        "rows": rows,
    }
    save_json(RESULTS, result)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
