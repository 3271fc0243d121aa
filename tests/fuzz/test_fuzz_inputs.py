"""Fuzzing what users hand in: recipe documents and ``.npz`` task files.

Whatever the input, the outcome is a finished run or a clear error (a one-line message from
the CLI, a ValueError or TypeError naming the file from Python), within a time box, and
nothing is written outside the run folder."""

from __future__ import annotations

import io
import signal
from contextlib import contextmanager

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import secateurs as sc
from secateurs.cli import main

# a recipe that runs in about a second: each example mutates it
BASE = {
    "task": "digits",
    "seed": 0,
    "model": {"name": "mlp", "args": {"hidden": [8]}},
    "stages": [
        {"train": {"epochs": 1, "lr": 0.003}},
        {"prune": {"ratio": 0.25, "importance": "l1"}},
        {"quantize": {"method": "ptq"}},
        {"export": {"format": "c", "verify": False}},
    ],
}
ODD = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        1,
        2,
        0.5,
        -0.5,
        1e30,
        -1e30,
        float("nan"),
        float("inf"),
        "",
        "x",
        "../x",
        "/etc/passwd",
        "1",
        [],
        [1, 2],
        {},
        {"a": 1},
        "a" * 300,
    ]
)
TIME_BOX = 60  # seconds; every valid mutation of BASE finishes in a few


def _paths(doc, prefix=()):
    """Every key path of a document, leaves and containers."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _mutate(doc, path, how, value):
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if how == "replace":
        parent[path[-1]] = value
    elif how == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[f"unknown_{len(parent)}"] = value
    return doc


@contextmanager
def _time_box(seconds: int):
    def expired(*_):
        raise TimeoutError(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _files(root):
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_recipes_run_or_fail_in_one_line(data, tmp_path_factory):
    import copy

    doc = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(list(_paths(doc))))
    how = data.draw(st.sampled_from(["replace", "delete", "add"]))
    doc = _mutate(doc, path, how, data.draw(ODD))
    root = tmp_path_factory.mktemp("fuzz")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    before = _files(root)
    console = Console(file=io.StringIO(), record=True, width=200, force_terminal=False)
    with _time_box(TIME_BOX):
        code = main(["run", str(recipe), "--out", str(root / "run")], console=console)
    said = console.export_text()
    assert code in (0, 2), code
    if code:
        assert "error:" in said and "Traceback" not in said, said
    outside = {p for p in _files(root) - before if p.parts[0] != "run"}
    assert not outside, outside


ARRAYS = st.sampled_from(
    [
        np.zeros((0, 4)),
        np.zeros((6, 4)),
        np.ones((6, 4)) * np.nan,
        np.full((6, 4), np.inf),
        np.arange(6),
        np.arange(6.0),
        np.array([0, 1, 0, 1, 0, 1]),
        np.array([0, 1, 2, 0, 1, 2]),
        np.array([-1, 0, 1, 0, 1, 0]),
        np.array(["a", "b", "a", "b", "a", "b"]),
        np.zeros((6, 1, 3, 3), np.uint8),
        np.zeros((6, 2, 5)),
        np.zeros(()),
        np.array([1.5] * 6),
        np.array([True, False] * 3),
        np.zeros((3, 4)),
        np.random.default_rng(0).random((6, 4)),
    ]
)
KEYS = st.sampled_from(
    ["x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "classes", "other"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays=st.dictionaries(KEYS, ARRAYS, max_size=7))
def test_npz_contents_give_a_task_or_an_error_naming_the_file(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    np.savez(path, **arrays)
    try:
        with _time_box(TIME_BOX):
            task = sc.data.load(path)
    except (ValueError, TypeError) as err:
        assert "data.npz" in str(err), str(err)
        return
    x, y = task.train.tensors
    assert len(x) == len(y) > 0 and int(y.max()) < task.num_classes
