"""Hostile and careless input: names that would leave their folder, YAML that expands
without bound, numbers no run could finish, and files that are not what they claim."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

import secateurs as sc
from secateurs._io import MAX_ALIASES, inside, load_yaml, safe_name, write_atomic
from secateurs.cli import main
from secateurs.recipe import RecipeError

BASE = {"task": "digits", "model": {"name": "lenet5"}, "stages": [{"train": {"epochs": 1}}]}


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a\x00b", "..", "", "é/ü", "z" * 500])
def test_safe_names_stay_one_component_and_never_collide(name, tmp_path):
    safe = safe_name(name)
    assert safe and "/" not in safe and "\x00" not in safe and not safe.startswith(".")
    assert len(safe) <= 80
    assert tmp_path in (tmp_path / safe).resolve().parents
    assert safe_name(name + "!") != safe_name(name + "?")  # both change: hashes differ
    assert safe_name("digits") == "digits" and safe_name("l1+kd") == "l1+kd"


def test_inside_refuses_paths_that_leave_the_root(tmp_path):
    assert inside(tmp_path, tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="outside"):
        inside(tmp_path, tmp_path / ".." / "x")
    assert write_atomic(tmp_path / "f.txt", "ok").read_text() == "ok"


def test_yaml_aliases_are_limited():
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(Exception, match=f"more than {MAX_ALIASES} aliases"):
        load_yaml("\n".join(levels))


def test_recipe_error_messages_quote_values_briefly():
    deep = [[[["x"] * 50] * 50] * 50]
    with pytest.raises(RecipeError) as err:
        sc.recipe.parse_recipe(dict(BASE, description=deep))
    assert len(str(err.value)) < 600


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"train": {"epochs": True}}, "expected a number"),
        ({"train": {"lr": float("inf")}}, "finite"),
        ({"train": {"lr": float("nan")}}, "finite"),
        ({"train": {"epochs": 1e44}}, "more than any run could do"),
        ({"train": {"batch_size": 10**26}}, "more than any run could do"),
        ({"compress": {"macs": float("inf")}}, "finite"),
    ],
)
def test_recipe_numbers_are_bounded(stage, message):
    with pytest.raises(RecipeError, match=message):
        sc.recipe.parse_recipe(dict(BASE, stages=[stage]))


def test_recipe_width_is_bounded():
    with pytest.raises(RecipeError, match="less than or equal to 64"):
        sc.recipe.parse_recipe(dict(BASE, model={"name": "lenet5", "width": 1e30}))


def _cli(argv):
    console = Console(record=True, width=200, force_terminal=False)
    code = main(argv, console=console)
    return code, console.export_text()


def test_cli_turns_damaged_files_into_one_line_errors(tmp_path):
    bad_npz = tmp_path / "data.npz"
    bad_npz.write_bytes(b"PK\x03\x04 not a zip")
    code, out = _cli(["train", "--task", str(bad_npz), "--epochs", "1"])
    assert code == 2 and out.startswith("error:") and "Traceback" not in out
    bad_ckpt = tmp_path / "model.pt"
    bad_ckpt.write_bytes(b"\x80\x02 truncated")
    code, out = _cli(["profile", "--checkpoint", str(bad_ckpt)])
    assert code == 2 and out.startswith("error:") and "Traceback" not in out


def test_non_finite_weights_are_refused_naming_the_tensor(digits):
    import torch

    model = sc.models.create("lenet5", digits, seed=0)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    for call in (
        lambda: sc.evaluate(model, digits),
        lambda: sc.quant.quantize(model, digits),
        lambda: sc.prune.channels(model, digits.example_inputs(), ratio=0.3),
        lambda: sc.prune.sparsify(model, sparsity=0.5),
    ):
        with pytest.raises(ValueError, match=r"0\.weight holds 1 NaN"):
            call()


def test_training_on_absurdly_scaled_inputs_stops_with_the_reason(digits):
    x, y = digits.train.tensors
    model = sc.models.create("mlp", digits, seed=0)
    with pytest.raises(FloatingPointError, match="normalize them"):
        sc.fit(model, (x * 1e30, y), epochs=3, progress=False)


@pytest.mark.parametrize("hidden", [[0], [-5], [2.5]])
def test_mlp_refuses_sizes_that_are_not_positive_whole_numbers(digits, hidden):
    with pytest.raises(ValueError, match="hidden sizes"):
        sc.models.create("mlp", digits, hidden=hidden)


def test_bad_npz_files_are_named_with_the_fix(tmp_path):
    import numpy as np

    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 junk")
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable \.npz archive"):
        sc.data.load(tmp_path / "bad.npz")
    np.savez(
        tmp_path / "obj.npz",
        x_train=np.array([{"a": 1}], dtype=object),
        y_train=np.array([0]),
        x_test=np.zeros((2, 4)),
        y_test=np.zeros(2, int),
    )
    with pytest.raises(ValueError, match=r"obj\.npz: holds an object array"):
        sc.data.load(tmp_path / "obj.npz")
    x, y = np.random.default_rng(0).random((21, 8)), np.array([0] * 10 + [1] * 10 + [2])
    np.savez(tmp_path / "one.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"one\.npz: y_train: classes \[2\] have a single"):
        sc.data.load(tmp_path / "one.npz")


@pytest.mark.parametrize(
    ("name", "cfg", "message"),
    [
        ("mobilenet_v2", [(1, 16)], r"each cfg entry is \(t, c, n, s\); entry 0 is \(1, 16\)"),
        ("mobilenet_v1", [(16,)], r"entry 0 is \(16,\)"),
        ("ghostnet", "abc", r"cfg must be a non-empty list"),
        ("efficientnet", [], r"cfg must be a non-empty list"),
    ],
)
def test_malformed_cfg_names_the_entry_and_its_fields(name, cfg, message, digits):
    with pytest.raises(ValueError, match=message):
        sc.models.create(name, digits, cfg=cfg)


def test_widths_no_machine_could_hold_are_refused_before_building(digits):
    with pytest.raises(ValueError, match="width must be at most 64"):
        sc.models.create("mlp", digits, width=1e4)


def test_exports_name_a_path_that_cannot_take_them(digits, tmp_path):
    q = sc.quant.quantize(sc.models.create("mlp", digits, seed=0), digits, num_batches=1)
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ValueError, match=r"export_c writes a folder, but .*file.txt is a file"):
        sc.deploy.export_c(q, file)
    with pytest.raises(ValueError, match=r"cannot write .*sub: .*file.txt is a file, not a"):
        sc.deploy.export_c(q, file / "sub")
    with pytest.raises(ValueError, match=r"export_tflite writes a file, but .* is a folder"):
        sc.deploy.export_tflite(q, tmp_path)
    with pytest.raises(ValueError, match=r"export_onnx cannot write .*file.txt is a file"):
        sc.deploy.export_onnx(q, file / "m.onnx")
    assert file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_failing_compiler_is_named_with_its_exit_status(digits, tmp_path, monkeypatch):
    q = sc.quant.quantize(sc.models.create("mlp", digits, seed=0), digits, num_batches=1)
    sc.deploy.export_c(q, tmp_path)
    monkeypatch.setenv("CC", "false")
    with pytest.raises(RuntimeError, match=r"with 'false' \(CC\) failed with exit status 1"):
        sc.deploy.verify_c(q, tmp_path, digits.test.tensors[0][:2])


def test_inputs_the_model_cannot_take_are_named_with_their_shape(digits, tmp_path):
    model = sc.models.create("mlp", digits, seed=0)
    wrong = digits.example_inputs(2).reshape(2, 1, 4, 16)[:, :, :3]  # (1, 3, 16) per sample
    calls = [
        lambda: sc.measure.profile(model, wrong, latency=False),
        lambda: sc.graph.DependencyGraph(model, wrong),
        lambda: sc.prune.channels(model, wrong, ratio=0.3),
        lambda: sc.prune.layers(model, wrong, target_macs=0.5, data=digits),
        lambda: sc.deploy.export_onnx(model, tmp_path / "m.onnx", example=wrong),
    ]
    for call in calls:
        with pytest.raises(
            ValueError,
            match=r"the model cannot run on example inputs of "
            r"shape \(1, 3, 16\) \(per sample\)",
        ):
            call()
    assert not (tmp_path / "m.onnx").exists()


def test_one_loader_reads_every_weights_file(tmp_path, digits):
    """A plain state dict and a secateurs checkpoint load the same way wherever weights
    come in (``sc.models.load_weights``, the CLI's --checkpoint, a recipe's
    model.checkpoint); a wrong file names the argument, the file and the fix."""
    model = sc.models.create("mlp", digits, seed=0)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    sc.models.save_checkpoint(model, tmp_path / "zoo.pt", "mlp", digits)
    for name in ("plain.pt", "zoo.pt"):
        fresh = sc.models.create("mlp", digits, seed=1)
        assert sc.models.load_weights(fresh, tmp_path / name) is fresh
        assert all(
            torch.equal(a, b)
            for a, b in zip(fresh.state_dict().values(), model.state_dict().values())
        )
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"--checkpoint: .*list\.pt is not a state dict"):
        sc.models.load_weights(model, tmp_path / "list.pt", what="--checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt cannot be loaded as a weights-only"):
        sc.models.load_weights(model, tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match=r"weights: .*missing\.pt does not exist"):
        sc.models.load_weights(model, tmp_path / "missing.pt")
    other = sc.models.create("mlp", digits, seed=0, hidden=[8])
    with pytest.raises(ValueError, match=r"does not fit the model"):
        sc.models.load_weights(other, tmp_path / "plain.pt")
