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


def test_every_option_of_a_public_function_is_keyword_only():
    """What a call is about (the model, its data, a path) is positional; every parameter
    with a default is an option, named at the call."""
    import importlib
    import inspect

    checked, positional = 0, []
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if not inspect.isfunction(obj):
                continue
            checked += 1
            for p in inspect.signature(obj).parameters.values():
                if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty:
                    positional.append(f"{name}.{attr}({p.name})")
    assert checked > 100 and not positional, positional
