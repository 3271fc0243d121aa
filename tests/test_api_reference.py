"""The API reference: built from the docstrings (pdoc), with every cross-reference in a
docstring or a docs page naming something that exists."""

from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path

import pytest

from tests.test_layout import PUBLIC, SRC, _modules, public_functions

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


def test_every_parameter_of_a_public_function_is_named_in_its_docstring():
    """The API reference's argument documentation: each parameter appears as ``name`` (or
    ``name=...``, ``name(...)``) in the docstring of the function that takes it."""
    import inspect

    functions, missing = public_functions(), {}
    for name, fn in functions.items():
        doc = inspect.getdoc(fn) or ""
        unnamed = tuple(
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and not re.search(rf"``{re.escape(p.name)}(?!\w)", doc)
        )
        if unnamed:
            missing[name] = unnamed
    assert len(functions) > 100 and not missing, (
        f"name these parameters in the docstrings: {missing}"
    )
