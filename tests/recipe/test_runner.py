import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import secateurs as sc
from secateurs.models.checkpoint import save_checkpoint
from secateurs.recipe import RecipeError, runner

# A small model through every kind of state a checkpoint must carry: pruning history,
# sparsity masks, a distillation teacher, QAT quantizers, and the int8 exports.
FULL = {
    "task": "digits",
    "seed": 1,
    "model": {"name": "lenet5"},
    "stages": [
        {"train": {"epochs": 8, "lr": 0.003}},
        {"prune": {"ratio": 0.4, "importance": "l1"}},
        {"sparsify": {"sparsity": 0.5, "ramp": "iterative", "steps": 2, "epochs": 2}},
        {"distill": {"method": "kd", "epochs": 2, "lr": 0.002}},
        {"quantize": {"method": "qat", "epochs": 1, "lr": 0.0002, "teacher": "train"}},
        {"evaluate": {"split": "val"}},
        {"export": {"format": "c", "verify_inputs": 32}},
        {"export": {"format": "onnx"}},
    ],
}
SMALL = {
    "task": "digits",
    "model": {"name": "mlp", "args": {"hidden": [32]}},
    "stages": [{"train": {"epochs": 2, "lr": 0.003}}, {"quantize": {}}],
}


def _stable(records):
    """Everything but timings, which no two runs share."""
    out = []
    for r in records:
        r = json.loads(json.dumps(r))
        r.pop("wall_s")
        r["profile"].pop("latency_ms")
        out.append(r)
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return sc.recipe.run(FULL, tmp_path_factory.mktemp("full") / "run")


def test_run_writes_checkpoints_metrics_and_exports(full_run):
    out, records = full_run.out, full_run.records
    names = ["train", "prune", "sparsify", "distill", "qat", "evaluate", "export-c", "export-onnx"]
    assert [r["name"] for r in records] == names
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["name"] for x in lines] == names
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"{i + 1:02d}-{n}.pt" for i, n in enumerate(names)
    ]
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporaries
    by = {r["name"]: r for r in records}
    assert by["train"]["accuracy"] > 0.85
    assert by["prune"]["profile"]["params"] < by["train"]["profile"]["params"]
    assert by["sparsify"]["details"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert by["qat"]["accuracy"] > 0.8 and by["qat"]["quantized"]
    # int8 weights against float32: the int8 model's flash is what the C stores
    assert by["qat"]["flash_bytes"] < 0.6 * by["distill"]["flash_bytes"]
    assert by["qat"]["flash_bytes"] == by["export-c"]["details"]["flash_bytes"]
    assert by["evaluate"]["details"]["split"] == "val"
    assert by["export-c"]["details"]["mismatches"] == 0
    assert by["export-c"]["details"]["verified_inputs"] == 32
    assert (out / "export" / "export-c" / "model.c").is_file()
    assert (out / by["export-onnx"]["details"]["path"]).stat().st_size > 1000
    assert full_run.qmodel is not None and sc.evaluate(
        full_run.qmodel, sc.data.load("digits", seed=1)
    ) == pytest.approx(records[-1]["accuracy"])


def test_masks_and_pruning_survive_the_checkpoint(full_run):
    task = sc.data.load("digits", seed=1)
    state = sc.recipe.load_state(full_run.out / "checkpoints" / "04-distill.pt", task)
    report = sc.prune.sparsity_report(state.model)
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    assert sc.evaluate(state.model, task) == pytest.approx(full_run.records[3]["accuracy"])
    q = sc.recipe.load_state(full_run.out / "checkpoints" / "05-qat.pt", task)
    x = task.test.tensors[0][:16]
    xq = full_run.qmodel.quantize_input(x)
    assert torch.equal(q.qmodel.run_int8(xq), full_run.qmodel.run_int8(xq))


def test_report_is_self_contained_and_quotes_the_metrics(full_run):
    out = full_run.out
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "http://" not in page and "https://" not in page and "<script" not in page
    md = (out / "report.md").read_text()
    for r in full_run.records:
        assert f"| {r['name']} | {r['kind']} | {r['accuracy']:.2%} |" in md
    for image in ("tradeoff", "channels", "sparsity", "sram"):
        assert f"(plots/{image}.png)" in md
        assert (out / "plots" / f"{image}.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_run_resumes_to_the_same_metrics(full_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = runner.STAGES

    class Interrupt:
        """The stage registry, with a Ctrl-C at the chosen stage kind."""

        def __init__(self, kind):
            self.kind = kind

        def get(self, kind):
            if kind == self.kind:

                def stop(*args):
                    raise KeyboardInterrupt

                return stop
            return real.get(kind)

    monkeypatch.setattr(runner, "STAGES", Interrupt("distill"))
    with pytest.raises(KeyboardInterrupt):
        sc.recipe.run(FULL, out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    monkeypatch.setattr(runner, "STAGES", Interrupt("export"))
    with pytest.raises(KeyboardInterrupt):
        sc.recipe.run(FULL, out, resume=True)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 6
    monkeypatch.setattr(runner, "STAGES", real)
    resumed = sc.recipe.run(FULL, out, resume=True)
    assert _stable(resumed.records) == _stable(full_run.records)


def test_a_stage_without_its_metrics_line_is_run_again(tmp_path):
    out = tmp_path / "run"
    first = sc.recipe.run(SMALL, out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(lines[0] + "\n")  # as if killed before the line
    again = sc.recipe.run(SMALL, out, resume=True)
    assert _stable(again.records) == _stable(first.records)


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_metrics(tmp_path):
    stages = [{"train": {"epochs": 2}}, {"finetune": {"epochs": 30}}, {"quantize": {}}]
    recipe = dict(SMALL, stages=stages)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    reference = sc.recipe.run(path, tmp_path / "reference")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "secateurs", "run", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # during the 30-epoch fine-tuning
    proc.wait()
    assert metrics.read_text().count("\n") == 1
    resumed = sc.recipe.run(path, out, resume=True)
    assert _stable(resumed.records) == _stable(reference.records)


def test_existing_run_folders_are_never_overwritten(tmp_path):
    out = tmp_path / "run"
    sc.recipe.run(SMALL, out)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        sc.recipe.run(SMALL, out)
    other = dict(SMALL, seed=5)
    with pytest.raises(ValueError, match="different recipe"):
        sc.recipe.run(other, out, resume=True)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a run folder"):
        sc.recipe.run(SMALL, stranger)
    assert (stranger / "notes.txt").read_text() == "mine"


def test_model_from_a_checkpoint(tmp_path, digits):
    model = sc.models.create("mlp", digits, seed=0, hidden=[32])
    sc.fit(model, digits, epochs=2, lr=3e-3, progress=False)
    accuracy = sc.evaluate(model, digits)
    zoo = tmp_path / "zoo.pt"
    save_checkpoint(model, zoo, "mlp", digits, hidden=[32])
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    evaluate_only = [{"evaluate": {}}]
    for spec in (
        {"checkpoint": str(zoo)},
        {"name": "mlp", "args": {"hidden": [32]}, "checkpoint": str(plain)},
    ):
        result = sc.recipe.run(
            {"task": "digits", "model": spec, "stages": evaluate_only},
            tmp_path / f"run-{len(spec)}",
        )
        assert result.records[0]["accuracy"] == pytest.approx(accuracy)


def test_a_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    torch.save([1, 2, 3], junk)
    spec = {"name": "mlp", "checkpoint": str(junk)}
    with pytest.raises(ValueError, match="is not a state dict"):
        sc.recipe.run(
            {"task": "digits", "model": spec, "stages": [{"evaluate": {}}]}, tmp_path / "a"
        )
    text = tmp_path / "text.pt"
    text.write_text("not a torch file")
    with pytest.raises(ValueError, match="cannot be loaded as a weights-only torch file"):
        sc.recipe.run(
            {
                "task": "digits",
                "model": spec | {"checkpoint": str(text)},
                "stages": [{"evaluate": {}}],
            },
            tmp_path / "b",
        )
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match=r"plain state dict; also give model.name"):
        sc.recipe.run(
            {"task": "digits", "model": {"checkpoint": str(plain)}, "stages": [{"evaluate": {}}]},
            tmp_path / "c",
        )
    with pytest.raises(ValueError, match="does not fit mlp"):
        sc.recipe.run(
            {
                "task": "digits",
                "model": spec | {"checkpoint": str(plain)},
                "stages": [{"evaluate": {}}],
            },
            tmp_path / "d",
        )


RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("mnist1d-*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_run_on_a_reduced_budget(path, tmp_path):
    stages = yaml.safe_load(path.read_text())["stages"]
    short = {}
    for i, stage in enumerate(stages):
        ((kind, args),) = stage.items()
        for key in ("epochs", "finetune_epochs"):
            if args and key in args:
                short[f"stages[{i}].{kind}.{key}"] = 2
    result = sc.recipe.run(path, tmp_path / "run", overrides=short)
    assert len(result.records) == len(stages)
    first, last = result.records[0], result.records[-1]
    assert last["quantized"] and last["flash_bytes"] < first["flash_bytes"] / 3
    exports = [r for r in result.records if r["name"] == "export-c"]
    assert exports and exports[0]["details"]["mismatches"] == 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_c_export_counts_instructions_and_their_latency_on_the_target(tmp_path):
    recipe = SMALL | {
        "target": "cortex-m0plus",
        "stages": [*SMALL["stages"], {"export": {"format": "c", "instructions": True}}],
    }
    details = sc.recipe.run(recipe, tmp_path / "run").records[-1]["details"]
    m0 = sc.measure.get_target("cortex-m0plus")
    assert details["instructions"] > details["flash_bytes"]  # every weight is read at least once
    assert details["target"] == "cortex-m0plus"
    assert details["latency_ms"] == pytest.approx(m0.latency_ms(details["instructions"]))
    with pytest.raises(RecipeError, match="apply to format c only"):
        sc.recipe.parse_recipe(
            SMALL | {"stages": [{"export": {"format": "onnx", "instructions": True}}]}
        )


def test_regularize_threshold_qgt_and_tflite_stages(tmp_path):
    recipe = {
        "task": "digits",
        "model": {"name": "lenet5"},
        "stages": [
            {"train": {"epochs": 4, "lr": 0.003}},
            {"regularize": {"regularizer": "group_lasso", "weight": 0.01, "epochs": 2}},
            {"prune": {"threshold": 0.45, "importance": "l2"}},
            {"quantize": {"method": "qgt", "bits": 4, "epochs": 1, "lr": 0.0005}},
            {"export": {"format": "tflite", "path": "model"}},
        ],
    }
    result = sc.recipe.run(recipe, tmp_path / "run")
    by = {r["name"]: r for r in result.records}
    assert by["regularize"]["details"]["epochs"] == 2
    assert by["prune"]["profile"]["params"] < by["regularize"]["profile"]["params"]
    assert result.qmodel.weight_bits() and set(result.qmodel.weight_bits().values()) == {4}
    assert by["qgt"]["profile"]["weight_bits"] == 4
    tflite = tmp_path / "run" / "model.tflite"
    assert by["export-tflite"]["details"]["path"] == "model.tflite"
    assert tflite.read_bytes()[4:8] == b"TFL3"


def test_prune_layers_stage_removes_blocks_and_survives_the_checkpoint(tmp_path):
    v2 = {"cfg": [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 1]], "last_channels": 64}
    recipe = {
        "task": "digits",
        "model": {"name": "mobilenet_v2", "width": 0.5, "args": v2},
        "stages": [
            {"train": {"epochs": 3, "lr": 0.003}},
            {"prune_layers": {"count": 1}},
            {"prune": {"ratio": 0.3, "scope": "global"}},
            {"finetune": {"epochs": 1, "lr": 0.002}},
        ],
    }
    result = sc.recipe.run(recipe, tmp_path / "run")
    by = {r["name"]: r for r in result.records}
    (removed,) = by["prune_layers"]["details"]["layers_removed"]
    assert removed in ("block1.conv.0", "block3", "block4", "block5")
    assert by["prune_layers"]["profile"]["macs"] < by["train"]["profile"]["macs"]
    task = sc.data.load("digits")
    state = sc.recipe.load_state(result.out / "checkpoints" / "04-finetune.pt", task)
    assert not list(state.model.get_submodule(removed).parameters())
    assert sc.evaluate(state.model, task) == pytest.approx(by["finetune"]["accuracy"])
    with pytest.raises(RecipeError, match="exactly one of target_macs, count"):
        sc.recipe.run({**recipe, "stages": [{"prune_layers": {}}]}, tmp_path / "bad")


USER_PACKAGE = """
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.BatchNorm2d(hidden),
                                  nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))
"""


@pytest.mark.slow
def test_imported_model_compresses_and_resumes_in_a_new_process(tmp_path, monkeypatch):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "nets.py").write_text(USER_PACKAGE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = {
        "task": "digits",
        "model": {"import": "userpkg.nets:Net", "args": {"hidden": 24}},
        "target": "cortex-m0plus",
        "stages": [
            {"train": {"epochs": 3, "lr": 0.003}},
            {
                "compress": {
                    "flash": "3KiB",
                    "sram": "2KiB",
                    "method": "uniform",
                    "finetune_epochs": 1,
                    "qat_epochs": 0,
                }
            },
            {"evaluate": {"split": "test"}},
            {"export": {"format": "c"}},
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    reference = sc.recipe.run(path, tmp_path / "reference")
    squeezed = reference.records[1]["details"]
    assert squeezed["fits"] and squeezed["flash_bytes"] <= 3072 and squeezed["sram_bytes"] <= 2048
    assert reference.records[3]["details"]["mismatches"] == 0
    out = tmp_path / "run"
    real = runner.STAGES

    class StopAtEvaluate:
        def get(self, kind):
            if kind == "evaluate":
                raise KeyboardInterrupt
            return real.get(kind)

    monkeypatch.setattr(runner, "STAGES", StopAtEvaluate())
    with pytest.raises(KeyboardInterrupt):
        sc.recipe.run(path, out)
    monkeypatch.setattr(runner, "STAGES", real)
    # a new process, where nothing was imported yet, rebuilds the user's model
    cmd = [sys.executable, "-m", "secateurs", "run", str(path), "--out", str(out), "--resume"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert _stable(resumed) == _stable(reference.records)


def test_model_import_is_checked_in_the_recipe():
    bad = dict(SMALL, model={"import": "no_colon_here"})
    with pytest.raises(RecipeError, match=r"package.module:build"):
        sc.recipe.parse_recipe(bad)
    both = dict(SMALL, model={"import": "a.b:c", "name": "lenet5"})
    with pytest.raises(RecipeError, match="not both"):
        sc.recipe.parse_recipe(both)
    after = dict(SMALL, stages=[{"quantize": {}}, {"compress": {"flash": "1KiB"}}])
    with pytest.raises(RecipeError, match="cannot follow quantization"):
        sc.recipe.parse_recipe(after)
    with pytest.raises(RecipeError, match="flash"):
        sc.recipe.parse_recipe(dict(SMALL, stages=[{"compress": {"flash": "lots"}}]))


def test_resume_runs_a_stage_again_when_its_checkpoint_is_damaged(tmp_path):
    stages = [{"train": {"epochs": 1}}, {"finetune": {"epochs": 1}}, {"quantize": {}}]
    recipe = dict(SMALL, stages=stages)
    reference = sc.recipe.run(recipe, tmp_path / "reference")
    out = tmp_path / "run"
    sc.recipe.run(recipe, out)
    damaged = sorted((out / "checkpoints").glob("*.pt"))[-1]
    damaged.write_bytes(damaged.read_bytes()[:100])  # a write cut short
    resumed = sc.recipe.run(recipe, out, resume=True)
    assert _stable(resumed.records) == _stable(reference.records)
    assert (
        sc.recipe.run(recipe, out, resume=True).records[-1]["accuracy"]
        == (reference.records[-1]["accuracy"])
    )


def test_a_run_that_fails_before_any_stage_finished_leaves_out_reusable(tmp_path):
    out = tmp_path / "run"
    bad = dict(SMALL, stages=[{"compress": {"flash": 10}}])
    with pytest.raises(ValueError, match=r"stages\[0\]\.compress: the budget cannot be met"):
        sc.recipe.run(bad, out)
    assert not out.exists()  # the corrected recipe may use the same folder
    good = dict(SMALL, stages=[{"train": {"epochs": 1}}])
    assert sc.recipe.run(good, out).records[0]["name"] == "train"
