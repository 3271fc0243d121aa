"""Channel pruning on models nobody here wrote: torchvision's classification models, with
random weights, beside Torch-Pruning.

For each model (64x64 inputs, 224x224 where the model needs it): build the dependency
graph, plan 30% of the channels by L1 norm (``sc.prune.plan(graph, 0.3, importance="l1")``),
zero those channels' weights, record the outputs, prune, and compare: the largest output
difference over the largest output (a correct pruner leaves float rounding, ~1e-7). A
model the graph refuses is listed with its message. Torch-Pruning (``MetaPruner``, L1
magnitude, ratio 0.3, the classifier ignored: the last Linear, or SqueezeNet's last
convolution) is run on a fresh copy where installed; it
counts as pruned when its step finishes within 3 minutes and the pruned model still runs
and keeps its output shape.

Speed, as ``benchmarks/graph_speed.py`` measures it on smaller models: each tool's graph
building and its whole prune (graph, plan and surgery) at that ratio, on a freshly built
model, timed once after an untimed run (ours: the correctness run; Torch-Pruning: its
graph alone), one torch thread; the ratio of Torch-Pruning's time to ours per model.

torchvision is not a dependency of secateurs (its wheels on the index need a CUDA build of
torch); run this where torch and torchvision are installed together:

    pip install torchvision torch-pruning   # beside a matching torch
    python benchmarks/torchvision_models.py [model ...]
    python benchmarks/torchvision_models.py --table   # the stored rows as the docs' table

Writes benchmarks/results/torchvision_models.json (row by row; a rerun resumes).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine, save_json
from torch import nn

import secateurs as sc
from secateurs.graph import DependencyGraph, GraphError

RESULTS = Path(__file__).parent / "results" / "torchvision_models.json"
MODELS = [
    "alexnet",
    "vgg16",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "regnet_x_1_6gf",
    "regnet_y_1_6gf",
    "densenet121",
    "densenet161",
    "googlenet",
    "inception_v3",
    "squeezenet1_0",
    "squeezenet1_1",
    "mnasnet0_5",
    "mnasnet1_0",
    "shufflenet_v2_x1_0",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
]
SIDE = {"inception_v3": 224, "vit_b_16": 224, "maxvit_t": 224}
RATIO = 0.3
TP_SECONDS = 180  # Torch-Pruning's time limit per model


def build(name: str) -> nn.Module:
    import torchvision.models as tvm

    kwargs = (
        {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    )
    torch.manual_seed(0)
    model = getattr(tvm, name)(weights=None, **kwargs).eval()
    with torch.no_grad():  # a head initialized to zero (ViT's) would make every check pass
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                nn.init.normal_(m.weight, std=0.02)
    return model


def ours(name: str, x: torch.Tensor) -> dict:
    model = build(name)
    try:
        graph = DependencyGraph(model, x)
    except GraphError as e:
        return {"pruned": False, "refused": str(e)}
    plan = sc.prune.plan(graph, RATIO, importance="l1")
    macs = sc.measure.profile(model, x, latency=False).macs
    graph.zero(plan)
    with torch.no_grad():
        expected = model(x)
    graph.prune(plan)
    with torch.no_grad():
        got = model(x)
    row = {
        "pruned": True,
        "relative_error": float((got - expected).abs().max() / expected.abs().max()),
        "output_scale": float(expected.abs().max()),
        "macs_kept": sc.measure.profile(model, x, latency=False).macs / macs,
        "channels_removed": sum(len(v) for v in plan.values()),
        "heads_removed": sum(len(v) for g, v in plan.items() if g.members[0].axis == "heads"),
    }
    model = build(name)
    start = time.perf_counter()
    graph = DependencyGraph(model, x)
    row["graph_seconds"] = time.perf_counter() - start
    graph.prune(sc.prune.plan(graph, RATIO, importance="l1"))
    row["prune_seconds"] = time.perf_counter() - start
    return row


def torch_pruning(name: str, x: torch.Tensor) -> dict | None:
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    model = build(name)
    shape = tuple(model(x).shape)
    # the classifier: the last Linear, or the last convolution where there is none (SqueezeNet)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:] or [
        m for m in model.modules() if isinstance(m, nn.Conv2d)
    ][-1:]

    def timeout(*_):
        raise TimeoutError(f"no result within {TP_SECONDS} s")

    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(TP_SECONDS)
    row = {}
    try:
        start = time.perf_counter()
        tp.DependencyGraph().build_dependency(build(name), example_inputs=x)  # warm-up
        row["graph_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        tp.pruner.MetaPruner(
            model,
            x,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=RATIO,
            ignored_layers=head,
        ).step()
        row["prune_seconds"] = time.perf_counter() - start
        with torch.no_grad():
            ok = tuple(model(x).shape) == shape
        return {"pruned": ok, **row, **({} if ok else {"error": "the output shape changed"})}
    except Exception as e:
        return {"pruned": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    finally:
        signal.alarm(0)


def table(results: dict) -> str:
    """The stored rows as the markdown table of docs/benchmarks.md."""
    lines = [
        "| model | input | ours: relative error | ours: MACs kept | ours: heads removed | "
        "ours: prune s | Torch-Pruning: prune s (ratio to ours) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        ours, theirs = row["secateurs"], row["torch_pruning"] or {}
        if theirs.get("pruned"):
            peer = (
                f"{theirs['prune_seconds']:.2f} "
                f"({theirs['prune_seconds'] / ours['prune_seconds']:.1f}x)"
            )
        else:
            peer = "fails: " + theirs.get("error", "not run")[:60].replace("|", "/")
        lines.append(
            f"| {name} | {row['input']} | {ours['relative_error']:.1e} | "
            f"{ours['macs_kept']:.2f} | {ours['heads_removed']} | "
            f"{ours['prune_seconds']:.2f} | {peer} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv == ["--table"]:
        print(table(json.loads(RESULTS.read_text())))
        return 0
    try:
        import torchvision
    except ImportError:
        print("this benchmark needs torchvision beside a matching torch: pip install torchvision")
        return 2
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "benchmark": "torchvision_models",
            "machine": machine(),
            "torchvision": torchvision.__version__,
            "ratio": RATIO,
            "command": "python benchmarks/torchvision_models.py",
        }
    )
    try:
        results["torch_pruning"] = importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        results["torch_pruning"] = None
    rows = results.setdefault("rows", {})
    for name in argv or MODELS:
        if name in rows and not argv and "prune_seconds" in rows[name]["secateurs"]:
            continue
        side = SIDE.get(name, 64)
        x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        rows[name] = {
            "input": side,
            "secateurs": ours(name, x),
            "torch_pruning": torch_pruning(name, copy.deepcopy(x)),
        }
        save_json(RESULTS, results)
        print(name, json.dumps(rows[name])[:300], flush=True)
    done = list(rows.values())
    results["summary"] = {
        "models": len(done),
        "secateurs_pruned": sum(r["secateurs"]["pruned"] for r in done),
        "secateurs_exact": sum(r["secateurs"].get("relative_error", 1) <= 1e-5 for r in done),
        "torch_pruning_pruned": sum(
            bool(r["torch_pruning"] and r["torch_pruning"]["pruned"]) for r in done
        ),
        "heads_removed": {
            n: r["secateurs"]["heads_removed"]
            for n, r in rows.items()
            if r["secateurs"].get("heads_removed")
        },
    }
    both = [
        (
            r["torch_pruning"]["prune_seconds"] / r["secateurs"]["prune_seconds"],
            r["torch_pruning"]["graph_seconds"] / r["secateurs"]["graph_seconds"],
        )
        for r in done
        if r["secateurs"].get("prune_seconds") and (r["torch_pruning"] or {}).get("prune_seconds")
    ]
    if both:
        prune, graph = np.array(both).T
        results["summary"]["speed"] = {
            "models": len(both),
            "prune_ratio_median": float(np.median(prune)),
            "prune_ratio_range": [float(prune.min()), float(prune.max())],
            "graph_ratio_median": float(np.median(graph)),
            "graph_ratio_range": [float(graph.min()), float(graph.max())],
        }
    save_json(RESULTS, results)
    print(json.dumps(results["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
