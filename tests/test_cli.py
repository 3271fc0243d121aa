import json
import subprocess
import sys

import pytest
from rich.console import Console

from secateurs.cli import main


def _run(argv):
    console = Console(record=True, width=200, force_terminal=False)
    code = main(argv, console=console)
    return code, console.export_text()


def test_list_shows_tasks_and_models():
    code, out = _run(["list"])
    assert code == 0
    for name in ("digits", "mnist1d", "mobilenet_v2", "shufflenet_v1", "ds_cnn", "elm"):
        assert name in out


@pytest.mark.parametrize("command", ["list", "train", "profile", "run", "bench", "demo"])
def test_every_command_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "secateurs", command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: secateurs" in result.stdout


def test_profile_prints_costs_and_layers():
    code, out = _run(["profile", "--model", "mlp", "--model-args", '{"hidden": [16]}', "--layers"])
    assert code == 0
    assert "1,210" in out  # params: 64*16+16 + 16*10+10
    assert "1,184" in out  # MACs
    assert "per layer" in out and "addmm" in out


def test_profile_json_reports_int8_sizes():
    code, out = _run(["profile", "--model", "mlp", "--weight-bits", "8", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["weight_bits"] == 8 and data["params"] > 0
    assert data["flash_bytes"] < data["params"] * 2


def test_train_saves_a_checkpoint_that_profile_reloads(tmp_path):
    ckpt = tmp_path / "mlp.pt"
    code, out = _run(
        ["train", "--model", "mlp", "--epochs", "4", "--lr", "0.003", "--out", str(ckpt)]
    )
    assert code == 0 and ckpt.is_file() and f"saved {ckpt}" in out
    accuracy = float(out.split("│ mlp")[1].split("│")[1].strip().rstrip("%"))
    assert accuracy > 88
    code, out = _run(["profile", "--checkpoint", str(ckpt)])
    assert code == 0 and f"{accuracy:.2f}%" in out


def test_bad_names_exit_with_a_clear_error():
    code, out = _run(["profile", "--model", "resnet50"])
    assert code == 2 and "unknown model 'resnet50'; known models:" in out
    code, out = _run(["train", "--task", "imagenet", "--epochs", "1"])
    assert code == 2 and "unknown task 'imagenet'" in out
    code, out = _run(["profile", "--model", "mlp", "--model-args", "[1]"])
    assert code == 2 and "--model-args must be a JSON object" in out


@pytest.mark.slow
def test_demo_runs_the_demo_recipe_and_prints_its_table(tmp_path):
    out = tmp_path / "demo"
    code, text = _run(["demo", "--out", str(out)])
    assert code == 0
    rows = {
        line.split("│")[1].strip(): line.split("│") for line in text.splitlines() if "│" in line
    }
    assert list(rows) == ["train", "prune", "distill", "qat", "export-c"]

    def percent(stage):
        return float(rows[stage][2].strip().rstrip("%"))

    def number(stage, column):
        return int(rows[stage][column].strip().replace(",", ""))

    assert percent("train") > 93 and percent("distill") > 93 and percent("export-c") > 93
    assert abs(number("prune", 4) / number("train", 4) - 0.5) <= 0.02  # MACs halved
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["details"]["mismatches"] == 0  # the C matched run_int8 bit for bit
    assert records[-1]["flash_bytes"] < records[0]["flash_bytes"] / 4
    assert (out / "report.html").is_file() and (out / "export/export-c/model.c").is_file()
    code, again = _run(["demo", "--out", str(out)])  # a second run reports the finished one
    assert code == 0 and "finished run" in again


def test_run_reports_a_malformed_recipe_by_yaml_path(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: digits\nmodel: {name: mlp}\nstages:\n  - train: {epochs: ten}\n")
    code, out = _run(["run", str(recipe), "--out", str(tmp_path / "run")])
    assert code == 2 and "stages[0].train.epochs" in out and "valid integer" in out
    assert not (tmp_path / "run").exists()
    code, out = _run(["run", str(recipe), "--out", str(tmp_path / "run"), "--set", "nokey"])
    assert code == 2 and "--set takes PATH=VALUE" in out


def test_run_with_overrides_and_resume(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: digits\nmodel: {name: mlp, args: {hidden: [16]}}\n"
        "stages:\n  - train: {epochs: 50}\n  - quantize: {}\n"
    )
    out = tmp_path / "run"
    argv = ["run", str(recipe), "--out", str(out), "--set", "stages[0].train.epochs=2"]
    code, text = _run(argv)
    assert code == 0 and "ptq" in text
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["details"]["epochs"] == 2
    code, text = _run(argv)
    assert code == 2 and "--resume" in text
    code, text = _run([*argv, "--resume"])
    assert code == 0 and "finished run" in text


def test_bench_runs_a_grid_and_reports_it(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: g\ntasks: [digits]\nmodels: {mlp: {name: mlp, args: {hidden: [32]}}}\n"
        "train: {epochs: 4, lr: 0.003}\nkeep: [0.5]\nseeds: [0]\n"
        "methods: {l1: [{prune: {target_macs: '{keep}'}}]}\n"
    )
    store = tmp_path / "s.sqlite"
    code, out = _run(["bench", "run", str(grid), "--store", str(store)])
    assert code == 0 and "2 cell(s) run (0 failed), 0 done already" in out
    code, out = _run(["bench", "run", str(grid), "--store", str(store)])
    assert code == 0 and "0 cell(s) run (0 failed), 2 done already" in out
    code, out = _run(["bench", "report", "--store", str(store), "--out", str(tmp_path / "r")])
    assert code == 0 and (tmp_path / "r" / "report.html").is_file()
    code, out = _run(["bench", "report", "--store", str(store)])
    assert code == 2 and "needs --out" in out

    # a fresh store seeded with the published cells runs only what they lack
    fresh = tmp_path / "fresh.sqlite"
    code, out = _run(["bench", "import", str(tmp_path / "r" / "cells.jsonl"), "--store",
                      str(fresh)])  # fmt: skip
    assert code == 0 and "2 cell(s) added" in out
    more = tmp_path / "more.yaml"
    more.write_text(grid.read_text().replace(
        "methods: {", "methods: {random: [{prune: {target_macs: '{keep}', importance: random}}], "
    ))  # fmt: skip
    code, out = _run(["bench", "run", str(more), "--store", str(fresh)])
    assert code == 0 and "1 cell(s) run (0 failed), 2 done already" in out
