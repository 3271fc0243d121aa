import json
import subprocess
import sys

import pytest
from rich.console import Console

import secateurs as sc
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


COMMANDS = ["list", "train", "profile", "compress", "run", "bench", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
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
    code, out = _run(
        ["bench", "import", str(tmp_path / "r" / "cells.jsonl"), "--store", str(fresh)]
    )
    assert code == 0 and "2 cell(s) added" in out
    more = tmp_path / "more.yaml"
    more.write_text(
        grid.read_text().replace(
            "methods: {",
            "methods: {random: [{prune: {target_macs: '{keep}', importance: random}}], ",
        )
    )
    code, out = _run(["bench", "run", str(more), "--store", str(fresh)])
    assert code == 0 and "1 cell(s) run (0 failed), 2 done already" in out


USER_MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=32, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.BatchNorm2d(hidden),
                                  nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))
"""


@pytest.mark.slow
def test_compress_takes_a_users_module_and_npz(tmp_path, monkeypatch, digits):
    import numpy as np
    import torch

    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    x, y = digits.train.tensors
    xt, yt = digits.test.tensors
    np.savez(
        tmp_path / "my.npz",
        x_train=x.numpy(),
        y_train=y.numpy(),
        x_test=xt.numpy(),
        y_test=yt.numpy(),
    )
    from mypkg.nets import Net

    torch.manual_seed(0)
    net = Net(hidden=24)
    task = sc.data.load(tmp_path / "my.npz")
    sc.fit(net, task, epochs=6, lr=3e-3, progress=False)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    code, out = _run(
        [
            "compress",
            "--model",
            "mypkg.nets:Net",
            "--model-args",
            '{"hidden": 24}',
            "--checkpoint",
            "w.pt",
            "--data",
            "my.npz",
            "--target",
            "cortex-m0plus",
            "--flash",
            "4KiB",
            "--sram",
            "3KiB",
            "--method",
            "uniform",
            "--epochs",
            "2",
            "--out",
            "build",
        ]
    )
    assert code == 0, out
    assert "compressed (uniform" in out and "limits" in out
    summary = json.loads((tmp_path / "build" / "compress.json").read_text())
    assert summary["fits"] and summary["costs"]["flash_bytes"] <= 4096
    assert summary["costs"]["sram_bytes"] <= 3072
    assert summary["verified"]["c_mismatches"] == 0
    assert (tmp_path / "build" / "c" / "model.c").is_file()


TWO_INPUT_MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.stats = nn.Linear(8, 16)
        self.head = nn.Linear(24 + 16, classes)

    def forward(self, image, stats):
        return self.head(torch.cat([self.image(image).mean((2, 3)), self.stats(stats)], 1))
"""


@pytest.mark.slow
def test_compress_takes_a_two_input_module_and_npz(tmp_path, monkeypatch, digits):
    import numpy as np

    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    arrays = {}
    for split in ("train", "test"):
        x, y = digits.split(split).tensors
        arrays.update(
            {
                f"x0_{split}": x.numpy(),
                f"x1_{split}": x[:, 0].mean(2).numpy(),
                f"y_{split}": y.numpy(),
            }
        )
    np.savez(tmp_path / "two.npz", **arrays)
    code, out = _run(
        [
            "compress",
            "--model",
            "two:Net",
            "--train-epochs",
            "4",
            "--data",
            "two.npz",
            "--target",
            "cortex-m4",
            "--macs",
            "0.5",
            "--method",
            "uniform",
            "--epochs",
            "1",
            "--out",
            "build",
        ]
    )
    assert code == 0, out
    summary = json.loads((tmp_path / "build" / "compress.json").read_text())
    assert summary["fits"] and summary["verified"] == {"c_inputs": 64, "c_mismatches": 0}
    assert summary["costs"]["macs"] <= 0.5 * summary["original_costs"]["macs"]
    assert "#define SECATEURS_INPUTS 2" in (tmp_path / "build" / "c" / "model.h").read_text()


def test_compress_refuses_an_untrained_or_unknown_model(tmp_path):
    code, out = _run(["compress", "--model", "lenet5", "--data", "digits"])
    assert code == 2 and "--checkpoint" in out
    code, out = _run(
        ["compress", "--model", "no_such_pkg.mod:Net", "--data", "digits", "--train-epochs", "1"]
    )
    assert code == 2 and "cannot import 'no_such_pkg.mod'" in out
    code, out = _run(
        [
            "compress",
            "--model",
            "lenet5",
            "--data",
            "digits",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
        ]
    )
    assert code == 2 and "--checkpoint" in out and "missing.pt does not exist" in out
