import numpy as np
import pytest
import torch
from PIL import Image

import secateurs as sc


def _arrays(n_train=60, n_test=20, shape=(1, 12), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.standard_normal((n_train, *shape)).astype(np.float32),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.standard_normal((n_test, *shape)).astype(np.float32),
        "y_test": np.arange(n_test) % classes,
    }


def _save(tmp_path, arrays, name="mydata.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_without_validation_holds_out_15_percent_of_train(tmp_path):
    task = sc.data.load(_save(tmp_path, _arrays()))
    assert task.name == "mydata" and task.modality == "signal"
    assert (len(task.train), len(task.val), len(task.test)) == (51, 9, 20)
    assert task.input_shape == (1, 12) and task.num_classes == 3


def test_npz_with_validation_and_images(tmp_path):
    arrays = _arrays(shape=(3, 4, 4))
    arrays["x_val"], arrays["y_val"] = arrays["x_test"][:6], arrays["y_test"][:6]
    task = sc.data.load(_save(tmp_path, arrays))
    assert task.modality == "image" and task.input_shape == (3, 4, 4)
    assert (len(task.train), len(task.val), len(task.test)) == (60, 6, 20)


def test_npz_two_dimensional_inputs_become_one_channel_signals(tmp_path):
    arrays = _arrays()
    arrays["x_train"], arrays["x_test"] = arrays["x_train"][:, 0], arrays["x_test"][:, 0]
    assert sc.data.load(_save(tmp_path, arrays)).input_shape == (1, 12)


def test_npz_with_several_inputs_keeps_each_as_shaped(tmp_path):
    arrays = _arrays(shape=(1, 6, 6))
    one = sc.data.load(_save(tmp_path, arrays, "one.npz"))
    arrays["x0_train"], arrays["x0_test"] = arrays.pop("x_train"), arrays.pop("x_test")
    arrays["x1_train"], arrays["x1_test"] = (
        np.ones((60, 5)) * np.arange(60)[:, None],
        np.ones((20, 5)),
    )
    task = sc.data.load(_save(tmp_path, arrays))
    assert task.num_inputs == 2 and task.input_shape == ((1, 6, 6), (5,))
    assert task.modality == "image" and (len(task.train), len(task.val)) == (51, 9)
    x0, x1, y = task.train.tensors  # the one-input split, sample for sample, row by row
    assert torch.equal(x0, one.train.tensors[0]) and torch.equal(y, one.train.tensors[1])
    assert torch.equal(
        x0.flatten(1), torch.as_tensor(arrays["x0_train"])[x1[:, 0].long()].flatten(1)
    )
    arrays["x1_val"] = arrays["x1_test"]
    with pytest.raises(ValueError, match="give both x0_val, x1_val and y_val"):
        sc.data.load(_save(tmp_path, arrays))
    del arrays["x1_val"], arrays["x1_test"]
    with pytest.raises(ValueError, match=r"missing arrays \['x1_test'\]"):
        sc.data.load(_save(tmp_path, arrays))


def test_npz_float_labels_with_integer_values_are_accepted(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float64)
    task = sc.data.load(_save(tmp_path, arrays))
    assert task.train.tensors[1].dtype.is_floating_point is False


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), r"missing arrays \['y_test'\]"),
        (
            lambda a: a.update(y_train=a["y_train"][:-1]),
            "x_train has 60 samples but y_train has 59",
        ),
        (lambda a: a.update(y_train=a["y_train"] + 0.5), "non-integer labels"),
        (lambda a: a["x_train"].__setitem__((4, 0, 3), np.nan), "1 NaN or infinite values"),
        (lambda a: a["x_test"].__setitem__((2, 0, 0), np.inf), "'x_test' holds 1 NaN"),
        (
            lambda a: a.update(y_train=np.where(a["y_train"] == 1, 2, a["y_train"])),
            r"classes \[1\] have no training samples",
        ),
        (lambda a: a.update(x_val=a["x_test"]), "give both x_val and y_val"),
        (lambda a: a.update(x_test=a["x_test"][:, :, :5]), "sample shapes differ"),
        (lambda a: a.update(y_test=-a["y_test"]), "negative labels"),
    ],
)
def test_npz_bad_input_names_the_problem(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    with pytest.raises(ValueError, match=message):
        sc.data.load(_save(tmp_path, arrays))


def test_non_npz_file_is_rejected(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"must be an \.npz archive"):
        sc.data.load(path)


def _image_folder(tmp_path, sizes=None, mode="L", per_class=6):
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["circle", "square"]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            size = (sizes or {}).get((c, i), (6, 5))
            channels = () if mode == "L" else (3,)
            pixels = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
            Image.fromarray(pixels, mode=None).convert(mode).save(d / f"{i}.png")
    return root


def test_image_folder_loads_one_class_per_subfolder(tmp_path):
    task = sc.data.load(_image_folder(tmp_path))
    assert task.class_names == ("circle", "square") and task.num_classes == 2
    assert task.input_shape == (1, 5, 6)
    assert len(task.train) + len(task.val) + len(task.test) == 12
    x = task.train.tensors[0]
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_image_folder_rgb_has_three_channels(tmp_path):
    assert sc.data.load(_image_folder(tmp_path, mode="RGB")).input_shape == (3, 5, 6)


def test_image_folder_with_mixed_sizes_names_the_image(tmp_path):
    root = _image_folder(tmp_path, sizes={(1, 2): (7, 5)})
    with pytest.raises(ValueError, match=r"square/2\.png: image is 7x5 .* resize all images"):
        sc.data.load(root)


def test_image_folder_with_an_empty_class_fails(tmp_path):
    root = _image_folder(tmp_path)
    (root / "triangle").mkdir()
    with pytest.raises(ValueError, match="class folder 'triangle' holds no images"):
        sc.data.load(root)


def test_task_options_do_not_apply_to_files(tmp_path):
    with pytest.raises(TypeError, match=r"options \['val_size'\] apply to registered tasks"):
        sc.data.load(_save(tmp_path, _arrays()), val_size=10)
