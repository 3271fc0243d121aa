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


@pytest.mark.parametrize("command", ["list", "train", "profile", "demo"])
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
def test_demo_prints_its_table():
    code, out = _run(["demo", "--epochs", "3"])
    assert code == 0
    assert "float32" in out and "int8 (PTQ)" in out and "peak SRAM" in out
    rows = {line.split("│")[1].strip(): line.split("│") for line in out.splitlines() if "│" in line}
    float_acc = float(rows["float32"][2].strip().rstrip("%"))
    assert float_acc > 80
    assert abs(float(rows["int8 (PTQ)"][2].strip().rstrip("%")) - float_acc) <= 3
    assert float(rows["pruned + int8"][2].strip().rstrip("%")) > 70
    pruned = rows["pruned to 1/2 MACs"]
    assert float(pruned[2].strip().rstrip("%")) > 70
    macs = [int(rows[k][4].strip().replace(",", "")) for k in ("float32", "pruned to 1/2 MACs")]
    assert abs(macs[1] / macs[0] - 0.5) <= 0.02
