import json
from pathlib import Path

import pytest
import torch
import yaml

import secateurs as sc
from secateurs.bench import runner
from secateurs.recipe import RecipeError

TINY = Path(__file__).parents[2] / "benchmarks" / "grids" / "tiny.yaml"


def _stable(rows):
    out = {}
    for r in rows:
        m = dict(r["metrics"])
        m.pop("latency_ms")
        m.pop("wall_s")
        out[r["key"]] = m
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    store = tmp_path_factory.mktemp("bench") / "tiny.sqlite"
    first = sc.bench.run_grid(TINY, store)
    return store, first


def test_tiny_grid_runs_every_cell_once_and_a_rerun_skips_them(tiny):
    store, first = tiny
    assert (first.ran, first.failed, first.skipped) == (10, 0, 0)
    rows = sc.bench.Store(store).rows()
    assert {r["status"] for r in rows} == {"done"} and all(r["attempts"] == 1 for r in rows)
    again = sc.bench.run_grid(TINY, store)
    assert (again.ran, again.skipped) == (0, 10)
    assert all(r["attempts"] == 1 for r in sc.bench.Store(store).rows())


def test_every_method_starts_from_the_same_parent_and_l1_beats_random(tiny):
    store, _ = tiny
    table = sc.bench.aggregate(sc.bench.Store(store).rows("done"))
    control = table[("digits", "mlp", "control", 1.0)]
    assert control["accuracy"] > 0.9 and control["compression"] == 1.0
    for keep in (0.5, 0.25):
        l1, rnd = (table[("digits", "mlp", m, keep)] for m in ("l1", "random"))
        assert abs(l1["speedup"] - 1 / keep) < 0.15 * (1 / keep)
        assert l1["accuracy"] > rnd["accuracy"]


def test_report_holds_every_method_and_operating_point(tiny, tmp_path):
    store, _ = tiny
    md, page = sc.bench.write_bench_report(store, tmp_path / "report")
    text = md.read_text()
    for method, keep in [
        ("control", "1"),
        ("l1", "0.5"),
        ("l1", "0.25"),
        ("random", "0.5"),
        ("random", "0.25"),
    ]:
        assert f"| mlp | {keep} | {method} |" in text
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 1 and "http" not in html
    assert (tmp_path / "report" / "plots" / "digits.png").read_bytes()[:4] == b"\x89PNG"


def test_a_killed_cell_is_retried_and_a_failed_one_too(tmp_path, monkeypatch):
    grid = yaml.safe_load(TINY.read_text()) | {"seeds": [0], "keep": [0.5]}
    store = tmp_path / "s.sqlite"
    sc.bench.run_grid(grid, store)
    db = sc.bench.Store(store)
    before = _stable(db.rows())
    key = "digits/mlp/l1/0.5/0"
    db.start(key)  # as if the process running it had died: left 'running'
    real = runner.run_recipe
    failures = []

    def flaky(recipe, out, **kw):
        if "random" in str(out) and not failures:
            failures.append(out)
            raise RuntimeError("worker lost")
        return real(recipe, out, **kw)

    db.finish("digits/mlp/random/0.5/0", None, "earlier failure")
    monkeypatch.setattr(runner, "run_recipe", flaky)
    result = sc.bench.run_grid(grid, store)
    assert result.ran == 2 and result.failed == 1
    rows = {r["key"]: r for r in db.rows()}
    assert rows[key]["status"] == "done" and rows[key]["attempts"] == 3  # run, died, retried
    failed = rows["digits/mlp/random/0.5/0"]
    assert failed["status"] == "failed" and "worker lost" in failed["error"]
    result = sc.bench.run_grid(grid, store)
    assert result.ran == 1 and result.failed == 0
    assert _stable(db.rows()) == before  # the retries reach the same numbers


def test_editing_a_method_reruns_its_cells_only(tiny, tmp_path):
    store = tmp_path / "s.sqlite"
    store.write_bytes(tiny[0].read_bytes())
    grid = yaml.safe_load(TINY.read_text())
    grid["methods"]["l1"][1]["finetune"]["epochs"] = 2
    before = {r["key"]: r for r in sc.bench.Store(store).rows()}
    result = sc.bench.run_grid(grid, store, root=tmp_path / "runs")
    assert (result.ran, result.skipped) == (4, 6)
    after = {r["key"]: r for r in sc.bench.Store(store).rows()}
    changed = {k for k in after if after[k]["metrics"] != before[k]["metrics"]}
    assert changed == {k for k in after if "/l1/" in k}
    assert all(after[k]["digest"] != before[k]["digest"] for k in changed)


def test_a_stage_default_that_changed_is_in_the_digest(tiny):
    """A prune stage that leaves ``recalibrate`` out now re-estimates batch-norm
    statistics: its digest differs from the one the same recipe had before the change, so
    a resumed grid reruns those cells; one that asks for the old behaviour (false) keeps
    the old digest, so its stored cells stay done."""
    from secateurs.bench.grid import _digest, parent_digest

    data = yaml.safe_load(TINY.read_text())
    grid = sc.bench.parse_grid(data)
    cells = [c for c in sc.bench.cells(grid) if c.method != sc.bench.CONTROL]

    def before_the_change(c):  # the digest rule as it was: the recipe as written
        parent = f"{'-'.join(map(str, c.parent))}-{parent_digest(grid, c.model)}"
        return _digest(sc.bench.cell_recipe(grid, c, parent))

    old = {c.key: before_the_change(c) for c in cells}
    digests = {}
    for flag in (None, False, True):
        for stages in data["methods"].values():
            if flag is not None:
                stages[0]["prune"]["recalibrate"] = flag
        flagged = sc.bench.parse_grid(data)
        digests[flag] = {c.key: sc.bench.cell_digest(flagged, c) for c in cells}
    stored = {r["key"]: r["digest"] for r in sc.bench.Store(tiny[0]).rows()}
    assert all(stored[k] == digests[None][k] != old[k] for k in old)
    assert digests[False] == old
    assert all(digests[True][k] not in (old[k], digests[None][k]) for k in old)


def test_rerun_runs_a_methods_cells_again_and_names_unknown_methods(tiny, tmp_path):
    store = tmp_path / "s.sqlite"
    store.write_bytes(tiny[0].read_bytes())
    before = _stable(sc.bench.Store(store).rows())
    result = sc.bench.run_grid(TINY, store, root=tmp_path / "runs", rerun=["random"])
    assert (result.ran, result.skipped) == (4, 6)
    rows = sc.bench.Store(store).rows()
    assert all(r["attempts"] == 1 and r["status"] == "done" for r in rows)
    assert _stable(rows) == before  # the same cells, run again, give the same numbers
    with pytest.raises(ValueError, match=r"rerun names methods \['l2'\]"):
        sc.bench.run_grid(TINY, store, rerun=["l2"])


def test_a_store_from_before_digests_reruns_everything(tmp_path):
    import sqlite3

    store = tmp_path / "old.sqlite"
    with sqlite3.connect(store) as con:  # the schema without the digest column
        con.execute(
            "CREATE TABLE cells (key TEXT PRIMARY KEY, grid TEXT NOT NULL, task TEXT "
            "NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL, keep REAL NOT NULL, "
            "seed INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts "
            "INTEGER NOT NULL DEFAULT 0, metrics TEXT, error TEXT, updated REAL)"
        )
        con.execute(
            "INSERT INTO cells VALUES ('digits/mlp/control/1/0', 'tiny', 'digits', "
            "'mlp', 'control', 1.0, 0, 'done', 1, '{}', NULL, 0)"
        )
    grid = sc.bench.load_grid(TINY)
    cells = [c for c in sc.bench.cells(grid) if c.seed == 0]
    db = sc.bench.Store(store)
    assert db.add(grid.name, cells, [sc.bench.cell_digest(grid, c) for c in cells]) == 1
    assert len(db.todo(cells, 3)) == len(cells)


@pytest.mark.slow
def test_process_backend_gives_the_serial_results(tmp_path):
    base = yaml.safe_load(TINY.read_text())
    grid = base | {"seeds": [0], "keep": [0.5], "methods": {"l1": base["methods"]["l1"]}}
    serial, parallel = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    sc.bench.run_grid(grid, serial)
    sc.bench.run_grid(grid, parallel, backend=sc.search.ProcessBackend(workers=2))
    a, b = (_stable(sc.bench.Store(p).rows()) for p in (serial, parallel))
    assert a == b and len(a) == 2


def test_bad_grids_name_the_key(tmp_path):
    base = yaml.safe_load(TINY.read_text())
    with pytest.raises(RecipeError) as info:
        sc.bench.parse_grid(base | {"keep": [0.5, 1.5]})
    assert "keep" in dict(info.value.problems)
    with pytest.raises(RecipeError) as info:
        bad = [{"prune": {"target_macs": "{keep}", "importance": "l7"}}]
        sc.bench.parse_grid(base | {"methods": {"l1": bad}})
    problems = dict(info.value.problems)
    assert "unknown importance 'l7'" in problems["methods.l1[0].prune.importance"]
    with pytest.raises(RecipeError, match="'control' names the unpruned parent"):
        sc.bench.parse_grid(base | {"methods": {"control": []}})
    with pytest.raises(RecipeError, match="no such grid file"):
        sc.bench.load_grid(tmp_path / "none.yaml")


def test_store_export_is_one_json_line_per_cell(tiny, tmp_path):
    store, _ = tiny
    lines = sc.bench.Store(store).export(tmp_path / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["status"] == "done"


def test_imported_cells_are_not_run_again_and_keep_their_state(tiny, tmp_path):
    exported = sc.bench.Store(tiny[0]).export(tmp_path / "cells.jsonl")
    fresh = sc.bench.Store(tmp_path / "fresh.sqlite")
    assert fresh.import_cells(exported) == 10
    assert fresh.import_cells(exported) == 0  # the cells it holds keep their own state
    assert _stable(fresh.rows()) == _stable(sc.bench.Store(tiny[0]).rows())
    assert {r["digest"] for r in fresh.rows()} == {
        r["digest"] for r in sc.bench.Store(tiny[0]).rows()
    }
    result = sc.bench.run_grid(TINY, fresh.path, root=tmp_path / "runs")
    assert (result.ran, result.skipped) == (0, 10)
    assert not (tmp_path / "runs").exists()  # nothing to run: no parent trained


def test_a_retrained_parent_must_score_as_its_imported_control(tiny, tmp_path):
    """Cells imported without the parents' files: a new method trains the parents again,
    which must match the published control cells, or the run stops before any cell."""
    lines = sc.bench.Store(tiny[0]).export(tmp_path / "cells.jsonl").read_text().splitlines()
    grid = yaml.safe_load(TINY.read_text())
    grid["seeds"] = [0]
    grid["methods"]["fpgm"] = [{"prune": {"target_macs": "{keep}", "importance": "fpgm"}}]
    good = sc.bench.Store(tmp_path / "good.sqlite")
    good.import_cells(tmp_path / "cells.jsonl")
    result = sc.bench.run_grid(grid, good.path, root=tmp_path / "good")
    assert (result.ran, result.failed) == (2, 0)  # fpgm at both points; the rest imported

    rows = [json.loads(line) for line in lines]
    for row in rows:
        if row["key"] == "digits/mlp/control/1/0":
            row["metrics"]["accuracy"] -= 0.01  # as if another machine had trained it
    (tmp_path / "tampered.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = sc.bench.Store(tmp_path / "bad.sqlite")
    bad.import_cells(tmp_path / "tampered.jsonl")
    with pytest.raises(RuntimeError, match=r"parent of digits/mlp, seed 0.*control/1/0"):
        sc.bench.run_grid(grid, bad.path, root=tmp_path / "bad")
    assert all(r["status"] != "running" for r in bad.rows())


def test_importing_something_else_names_the_line(tmp_path):
    store = sc.bench.Store(tmp_path / "s.sqlite")
    (tmp_path / "x.jsonl").write_text('{"key": "a/b/c/1/0"}\n')
    with pytest.raises(
        ValueError,
        match=r"x.jsonl:1: not a cell as Store.export writes it "
        r"\(no grid, task",
    ):
        store.import_cells(tmp_path / "x.jsonl")
    (tmp_path / "y.jsonl").write_text("\nnot json\n")
    with pytest.raises(ValueError, match=r"y.jsonl:2: not a cell"):
        store.import_cells(tmp_path / "y.jsonl")
    with pytest.raises(FileNotFoundError, match="no cells file"):
        store.import_cells(tmp_path / "none.jsonl")
    assert store.rows() == []


@pytest.mark.slow
def test_ray_backend_gives_the_local_results(tmp_path):
    pytest.importorskip("ray", reason="the test extra installs ray")
    base = yaml.safe_load(TINY.read_text())
    grid = base | {"seeds": [0], "keep": [0.5], "methods": {"l1": base["methods"]["l1"]}}
    local, distributed = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    sc.bench.run_grid(grid, local)
    backend = sc.search.RayBackend("local", workers=2)
    try:
        result = sc.bench.run_grid(grid, distributed, backend=backend)
        assert backend.workers == 2
    finally:
        backend.close()
    assert result.ran == 2 and result.failed == 0
    a, b = (_stable(sc.bench.Store(p).rows()) for p in (local, distributed))
    assert a == b


@pytest.mark.parametrize("task", ["../../escaped", "/tmp/absolute-task", "a\x00b", "x" * 300])
def test_a_report_on_hostile_cells_writes_only_inside_its_folder(tiny, tmp_path, task):
    cells = sc.bench.Store(tiny[0]).export(tmp_path / "cells.jsonl")
    lines = [json.loads(line) for line in cells.read_text().splitlines()]
    for row in lines:
        row["key"] = row["key"].replace(row["task"], task, 1)
        row["task"] = task
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(r) + "\n" for r in lines))
    fresh = sc.bench.Store(tmp_path / "fresh.sqlite")
    assert fresh.import_cells(hostile) == len(lines)
    before = set(tmp_path.parent.rglob("*"))
    out = tmp_path / "deep" / "report"
    sc.bench.write_bench_report(fresh.path, out)
    created = set(tmp_path.parent.rglob("*")) - before
    assert created and all(out in p.parents or p == out or p in out.parents for p in created)
    assert (
        not list(tmp_path.parent.glob("escaped*")) and not Path("/tmp/absolute-task.png").exists()
    )


def test_parent_and_cell_paths_stay_under_the_root(tmp_path):
    data = yaml.safe_load(TINY.read_text())
    label = next(iter(data["models"]))
    data["models"] = {"../../../X": data["models"][label]}
    data["methods"] = {k: [{**s} for s in v] for k, v in data["methods"].items()}
    grid = sc.bench.parse_grid(data)
    for task in ("../../up", "/abs/data.npz"):
        path = runner.parent_path(grid, tmp_path, task, "../../../X", 0)
        assert tmp_path / "parents" in path.parents
    for cell in sc.bench.cells(grid)[:3]:
        cell = cell.__class__(**{**cell.__dict__, "task": "../../up"})
        assert tmp_path / "cells" in runner.cell_folder(tmp_path, grid, cell).parents


def test_cells_out_of_attempts_are_reported_and_retried(tiny, tmp_path, monkeypatch):
    import shutil

    store = tmp_path / "tiny.sqlite"
    shutil.copy(tiny[0], store)
    shutil.copytree(tiny[0].with_suffix(""), tmp_path / "tiny")
    db = sc.bench.Store(store)
    keys = sorted(r["key"] for r in db.rows() if r["method"] != "control")[:2]
    db.reset(keys)
    real = runner.run_cell
    monkeypatch.setattr(runner, "run_cell", lambda **kw: {"error": "Traceback ...\nboom"})
    first = sc.bench.run_grid(TINY, store, max_attempts=1)
    assert (first.ran, first.failed) == (2, 2) and not first.complete
    again = sc.bench.run_grid(TINY, store, max_attempts=1)
    assert again.ran == 0 and sorted(again.exhausted) == keys and not again.complete
    assert all("boom" in e for e in again.exhausted.values())
    monkeypatch.setattr(runner, "run_cell", real)
    fixed = sc.bench.run_grid(TINY, store, max_attempts=1, retry_failed=True)
    assert (fixed.ran, fixed.failed) == (2, 0) and fixed.complete


def test_a_second_runner_on_one_store_is_refused(tmp_path):
    store = tmp_path / "s.sqlite"
    with runner.store_lock(store), pytest.raises(RuntimeError, match="another `bench run`"):
        sc.bench.run_grid(TINY, store)
    with runner.store_lock(store):  # released
        pass


def test_the_report_lists_the_cells_it_lacks(tiny, tmp_path):
    import shutil

    store = tmp_path / "tiny.sqlite"
    shutil.copy(tiny[0], store)
    db = sc.bench.Store(store)
    key = sorted(r["key"] for r in db.rows() if r["method"] != "control")[0]
    db.reset([key])
    db.start(key)
    db.finish(key, None, "Traceback ...\nValueError: boom")
    md, page = sc.bench.write_bench_report(store, tmp_path / "report")
    text = md.read_text()
    assert "## Cells missing from this report" in text
    assert f"| {key} | failed | 1 | ValueError: boom |" in text
    assert "Cells missing from this report" in page.read_text()


@pytest.mark.slow
def test_backends_agree_on_batchnorm_and_distillation(tmp_path):
    """One thread policy: the serial backend runs cells on one torch thread as the process
    backend's workers do (and gives the caller's thread count back), so a model with
    BatchNorm, pruned and distilled, comes out the same from both."""
    grid = {
        "name": "bn-kd",
        "tasks": ["digits"],
        "seeds": [0],
        "keep": [0.5],
        "models": {"resnet8": {"name": "resnet8", "width": 0.25}},
        "train": {"epochs": 2, "lr": 0.003},
        "methods": {
            "l1+kd": [
                {"prune": {"target_macs": "{keep}", "importance": "l1", "scope": "global"}},
                {"distill": {"method": "kd", "teacher": "model", "epochs": 1, "lr": 0.003}},
            ]
        },
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        serial, parallel = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
        sc.bench.run_grid(grid, serial)
        assert torch.get_num_threads() == 2
        sc.bench.run_grid(grid, parallel, backend=sc.search.ProcessBackend(workers=2))
    finally:
        torch.set_num_threads(threads)
    a, b = (_stable(sc.bench.Store(p).rows()) for p in (serial, parallel))
    assert a == b and len(a) == 2
    assert all(m["torch_threads"] == 1 for m in a.values())


def test_a_grid_passes_a_tasks_options_to_its_parents_and_cells(tmp_path):
    """``task_args``: Fashion-MNIST on a 300-image slice, tested on 200 images (so every
    accuracy is a whole number of 200ths), and the options in the parent's digest."""
    try:
        sc.data.load("fashion_mnist", train_size=300, val_size=100, test_size=200)
    except FileNotFoundError as e:  # apt-get install dataset-fashion-mnist
        pytest.skip(str(e))
    base = yaml.safe_load(TINY.read_text())
    sizes = {"train_size": 300, "val_size": 100, "test_size": 200}
    grid = base | {
        "tasks": ["fashion_mnist"],
        "task_args": {"fashion_mnist": sizes},
        "models": {"mlp": {"name": "mlp", "args": {"hidden": [16]}}},
        "seeds": [0],
        "keep": [0.5],
        "methods": {"l1": base["methods"]["l1"]},
        "train": {"epochs": 1, "lr": 0.003},
    }
    run = sc.bench.run_grid(grid, tmp_path / "g.sqlite")
    rows = sc.bench.Store(tmp_path / "g.sqlite").rows("done")
    assert run.complete and run.ran == 2 and len(rows) == 2
    for r in rows:
        assert abs(r["metrics"]["accuracy"] * 200 - round(r["metrics"]["accuracy"] * 200)) < 1e-6
    parsed = sc.bench.parse_grid(grid)
    assert sc.bench.cell_recipe(parsed, sc.bench.cells(parsed)[1], "p.pt")["task"] == {
        "name": "fashion_mnist",
        **sizes,
    }
    plain = sc.bench.parse_grid(grid | {"task_args": {}})
    digest = sc.bench.grid.parent_digest
    assert digest(parsed, "mlp", "fashion_mnist") != digest(plain, "mlp", "fashion_mnist")
    with pytest.raises(RecipeError, match="task fashion_mnist takes no option 'size'"):
        sc.bench.parse_grid(grid | {"task_args": {"fashion_mnist": {"size": 3}}})
    with pytest.raises(RecipeError, match="task_args names 'digits', which is not one"):
        sc.bench.parse_grid(grid | {"task_args": {"digits": {}}})
