"""The API reference: built from the docstrings (pdoc), with every cross-reference in a
docstring or a docs page naming something that exists."""

from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path

import pytest

from tests.test_layout import PUBLIC, SRC, _modules

ROOT = SRC.parent
ROLE = re.compile(r":(?:func|class|meth|data|attr|mod):`~?([^`]+)`")  # :func:`sc.fit`
CODE = re.compile(r"``((?:sc|secateurs)\.[A-Za-z_][\w.]*)")  # ``sc.prune.channels(...)``
DOCS = re.compile(r"`((?:sc|secateurs)\.[A-Za-z_][\w.]*)")  # `sc.prune.channels` in Markdown


def _dotted(name: str) -> bool:
    """Whether ``sc.a.b`` (or ``secateurs.a.b``) names an object or a module."""
    parts = name.rstrip(".").split(".")
    parts[0] = "secateurs"
    obj = importlib.import_module("secateurs")
    for i, part in enumerate(parts[1:], 2):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            return False
    return True


def _in_scope(target: str, scopes: list[dict]) -> bool:
    """Whether ``target`` (``name`` or ``Class.attr``) is found in one of ``scopes``."""
    head, *rest = target.split(".")
    for scope in scopes:
        if head not in scope:
            continue
        obj = scope[head]
        for attr in rest:
            if not hasattr(obj, attr):
                break
            obj = getattr(obj, attr)
        else:
            return True
    return False


def _broken(module: str, path: Path) -> list[str]:
    """The references in the docstrings of ``module`` that name nothing."""
    namespace = vars(importlib.import_module(module))
    tree = ast.parse(path.read_text())
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
            continue
        doc = ast.get_docstring(node, clean=False) or ""
        owners = [c.name for c in classes if node in ast.walk(c) and c.name in namespace]
        scopes = [namespace, *(vars(namespace[c]) for c in owners)]
        for target in ROLE.findall(doc):
            dotted = target.startswith(("sc.", "secateurs."))
            if not (_dotted(target) if dotted else _in_scope(target, scopes)):
                found.append(f"{module}: :{target}:")
        found += [f"{module}: ``{t}``" for t in CODE.findall(doc) if not _dotted(t)]
    return found


def test_every_reference_in_a_docstring_names_something():
    modules = {m: p for m, p in _modules().items() if not m.endswith("__main__")}
    broken = [ref for m, p in modules.items() for ref in _broken(m, p)]
    assert len(modules) > 80 and not broken, broken


def test_every_api_name_in_the_docs_exists():
    pages = [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    broken = [
        f"{page.relative_to(ROOT)}: {name}"
        for page in pages
        for name in DOCS.findall(page.read_text())
        if not _dotted(name)
    ]
    assert len(pages) > 20 and not broken, broken


def test_a_broken_reference_is_caught():
    assert not _dotted("sc.prune.chanels") and _dotted("sc.prune.channels")
    assert _dotted("secateurs.prune.structured.PruneReport")
    assert not _in_scope("Path.nothing", [{"Path": Path}]) and _in_scope(
        "Path.name", [{"Path": Path}]
    )


def test_the_api_reference_builds(tmp_path):
    """``make api`` writes the same pages to build/api."""
    pdoc = pytest.importorskip("pdoc", reason="the API reference needs pdoc: pip install pdoc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a module pdoc cannot import or document fails here
        pdoc.render.configure(docformat="restructuredtext")
        pdoc.pdoc("secateurs", output_directory=tmp_path)
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    expected = {name.replace(".", "/") + ".html" for name in PUBLIC}
    assert expected <= pages, sorted(expected - pages)
    channels = (tmp_path / "secateurs" / "prune.html").read_text()
    assert 'id="channels"' in channels and "in place" in channels


# public functions whose docstrings do not yet name every parameter (``name``), and the
# parameters they leave out: the list only shrinks (a function documented in full must
# leave it; a new function must name all of its own)
UNNAMED = {
    "secateurs.distill.attention_map": ("x", "p"),
    "secateurs.distill.block_outputs": ("model", "task"),
    "secateurs.distill.classifier_path": ("model",),
    "secateurs.distill.enhance_teacher": ("lr", "reduction", "seed"),
    "secateurs.distill.kd_loss": ("student", "teacher", "temperature"),
    "secateurs.distill.rkd_angle": ("student", "teacher"),
    "secateurs.distill.rkd_distance": ("student", "teacher"),
    "secateurs.distill.stage_outputs": ("model", "task"),
    "secateurs.deploy.build_program": ("sparse",),
    "secateurs.deploy.compile_c": ("outdir", "sanitize", "cc"),
    "secateurs.deploy.count_instructions": ("binary",),
    "secateurs.deploy.estimate_c": ("qmodel",),
    "secateurs.deploy.export_tflite": ("path",),
    "secateurs.deploy.run_c": ("binary", "output_size"),
    "secateurs.deploy.run_tflite": ("output_shape",),
    "secateurs.deploy.tflite_model": ("memory_plan",),
    "secateurs.deploy.tflite_operators": ("model",),
    "secateurs.search.admm": ("epochs", "admm_lr", "rho", "rho_growth", "purification", "epsilon"),
    "secateurs.search.autoprune": ("aux_lr", "strength", "every"),
    "secateurs.search.evaluate_candidate": (
        "task",
        "example_inputs",
        "lr",
        "importance",
        "ignored",
        "seed",
    ),
    "secateurs.search.get_backend": ("backend",),
    "secateurs.search.greedy_sensitivity": ("levels",),
    "secateurs.search.measure_costs": ("x",),
    "secateurs.search.metapruning": ("generations", "mutation", "hidden"),
    "secateurs.search.purify": ("model", "space", "task", "epsilon", "candidates"),
    "secateurs.recipe.build_model": ("spec", "task", "seed"),
    "secateurs.recipe.load_recipe": ("path", "overrides"),
    "secateurs.recipe.load_state": ("path", "task"),
    "secateurs.recipe.measure_state": ("state", "task"),
    "secateurs.recipe.parse_recipe": ("data", "source", "overrides"),
    "secateurs.recipe.run": ("recipe",),
    "secateurs.recipe.save_state": ("state", "name"),
    "secateurs.recipe.stage_rows": ("records",),
    "secateurs.recipe.write_report": ("out", "recipe", "records", "target"),
    "secateurs.bench.aggregate": ("rows",),
    "secateurs.bench.cell_digest": ("grid", "cell"),
    "secateurs.bench.cell_recipe": ("grid", "cell", "parent"),
    "secateurs.bench.cells": ("grid",),
    "secateurs.bench.load_grid": ("path",),
    "secateurs.bench.parse_grid": ("data", "source"),
    "secateurs.bench.run_cell": ("grid", "cell"),
    "secateurs.bench.run_grid": ("max_attempts",),
    "secateurs.bench.train_parent": ("grid", "task", "model", "seed", "root"),
    "secateurs.bench.write_bench_report": ("out",),
}


def test_every_parameter_of_a_public_function_is_named_in_its_docstring():
    """The API reference's argument documentation: each parameter appears as ``name`` (or
    ``name=...``, ``name(...)``) in the docstring of the function that takes it."""
    import inspect

    missing, documented = {}, []
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in module.__all__:
            fn = getattr(module, attr)
            if not inspect.isfunction(fn):
                continue
            doc = inspect.getdoc(fn) or ""
            params = inspect.signature(fn).parameters.values()
            unnamed = tuple(
                p.name
                for p in params
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                and not re.search(rf"``{re.escape(p.name)}(?!\w)", doc)
            )
            key = f"{name}.{attr}"
            if unnamed and set(unnamed) - set(UNNAMED.get(key, ())):
                missing[key] = unnamed
            if key in UNNAMED and set(UNNAMED[key]) - set(unnamed):
                documented.append(key)
    assert not missing, f"name these parameters in the docstrings: {missing}"
    assert not documented, f"now documented: take them off UNNAMED: {documented}"
