"""The package's import graph: layers that import one way, with one known exception."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# QuantizedModel.flash_bytes counts the constants the C stores by lowering the model, so
# quant.ptq reaches into deploy (inside that method) while deploy builds on quant
KNOWN = {
    frozenset(
        {
            "secateurs.quant.ptq",
            "secateurs.deploy.codegen",
            "secateurs.deploy.lower",
            "secateurs.deploy.plan",
        }
    ),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "secateurs").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports anywhere in its file, inside functions too."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                member = f"{source}.{alias.name}"
                found.add(member if member in modules else source)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return (found & set(modules)) - {name}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_but_the_known_one():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["secateurs.deploy.codegen"] >= {"secateurs.quant.ptq"}  # the parser sees edges
    assert set(_cycles(graph)) <= KNOWN, _cycles(graph)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


PUBLIC = [
    "secateurs",
    "secateurs.data",
    "secateurs.models",
    "secateurs.measure",
    "secateurs.graph",
    "secateurs.prune",
    "secateurs.quant",
    "secateurs.distill",
    "secateurs.deploy",
    "secateurs.search",
    "secateurs.recipe",
    "secateurs.bench",
]


def public_functions() -> dict:
    """Every function a public package lists in ``__all__``, by its qualified name."""
    import importlib
    import inspect

    found = {}
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isfunction(obj):
                found[f"{name}.{attr}"] = obj
    return found


def test_every_option_of_a_public_function_is_keyword_only():
    """What a call is about (the model, its data, a path) is positional; every parameter
    with a default is an option, named at the call."""
    import inspect

    functions, positional = public_functions(), []
    for name, fn in functions.items():
        for p in inspect.signature(fn).parameters.values():
            if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty:
                positional.append(f"{name}({p.name})")
    assert len(functions) > 100 and not positional, positional


def test_torch_dispatch_internals_are_touched_in_one_file():
    """The graph, the profiler and int8 capture share one trace (``_execution.watch``)."""
    private = ("TorchDispatchMode", "torch.utils._python_dispatch", "torch.utils._pytree")
    users = sorted(
        path.relative_to(SRC).as_posix()
        for path in (SRC / "secateurs").rglob("*.py")
        if any(word in path.read_text() for word in private)
    )
    assert users == ["secateurs/_execution.py"], users


def test_the_models_own_forward_has_one_name_in_every_reader():
    """An op in the model's own forward is named "(model)" by the graph, by int8 capture
    and by the profile's module path ("" there, as a path)."""
    import pytest
    import torch
    from torch import nn

    import secateurs as sc

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * torch.ones(3).flip(0)  # an op on a constant, in the root

    class Gathers(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):  # an op the graph does not understand, in the root
            return self.fc(x).gather(1, torch.zeros(2, 4, dtype=torch.long))

    x = torch.randn(2, 4)
    with pytest.raises(sc.quant.QuantError, match=r"in module '\(model\)'"):
        sc.quant.capture(Scaled(), x)
    with pytest.raises(sc.graph.GraphError, match=r"in module '\(model\)'"):
        sc.graph.DependencyGraph(Gathers(), x)
    layers = sc.measure.profile(Scaled(), x).layers
    assert {layer.module for layer in layers} == {"fc", ""}


def test_no_public_name_shadows_a_module():
    """``sc.prune.channels`` is a function and ``sc.prune.structured`` its module: a
    package attribute never hides a submodule of the same name."""
    import importlib

    shadowed = []
    for name in _modules():
        if name.endswith("__main__"):
            continue  # importing it runs the command line
        module = importlib.import_module(name)
        package, _, leaf = name.rpartition(".")
        if package and getattr(importlib.import_module(package), leaf) is not module:
            shadowed.append(name)
    assert len(_modules()) > 80 and not shadowed, shadowed


def test_a_public_name_means_one_thing_across_packages():
    """``sc.models.FeatureMap`` and ``sc.bench.Grid``: two classes never share a name."""
    import importlib
    import inspect

    meanings: dict[str, set[int]] = {}
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                meanings.setdefault(attr, set()).add(id(obj))
    assert len(meanings) > 150
    assert not [attr for attr, ids in meanings.items() if len(ids) > 1]
