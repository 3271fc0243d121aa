"""The real-data tasks: read from packages' data files, split and normalized as documented,
a restricted unpickler, and errors that name the install command."""

from __future__ import annotations

import gzip
import io
import pickle

import numpy as np
import pytest
import torch

import secateurs as sc
from secateurs.data import real


def _load(name: str, **kwargs):
    try:
        return sc.data.load(name, **kwargs)
    except FileNotFoundError as e:  # the package or Debian data is not installed here
        pytest.skip(str(e))


def test_fashion_mnist_slices_keep_classes_and_the_test_slice_is_fixed():
    a = _load("fashion_mnist", seed=0, train_size=1000, test_size=500)
    b = _load("fashion_mnist", seed=1, train_size=1000, test_size=500)
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert (len(a.train), len(a.val), len(a.test)) == (1000, 5000, 500)
    assert a.class_names[9] == "ankle boot"
    assert np.bincount(a.train.tensors[1].numpy()).min() >= 90  # stratified: 100 each
    x = a.train.tensors[0]
    assert x.min() >= 0.0 and x.max() <= 1.0 and 0.2 < x.mean() < 0.4
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])  # same test slice
    assert not torch.equal(a.train.tensors[0], b.train.tensors[0])  # seed moves train


def test_mnist_reads_the_pickle_through_the_restricted_unpickler():
    task = _load("mnist", train_size=500, test_size=200, val_size=200)
    assert (len(task.train), len(task.val), len(task.test)) == (500, 200, 200)
    assert task.input_shape == (1, 28, 28)
    assert len(np.unique(task.test.tensors[1].numpy())) == 10


def test_watch_imu_holds_out_subjects_and_whole_recordings():
    task = _load("watch_imu")
    assert task.input_shape == (6, 100) and task.num_classes == 7 and task.modality == "signal"
    assert len(task.test) == 1002  # subjects 9 and 10, as documented
    x = task.train.tensors[0]
    assert torch.allclose(x.mean((0, 2)), torch.zeros(6), atol=1e-4)  # standardized on train
    assert torch.allclose(x.std((0, 2)), torch.ones(6), atol=1e-2)
    assert abs(task.val.tensors[0].mean().item()) < 0.5  # train statistics, not its own
    # no validation window appears in train: whole recordings are held out
    train = {tuple(w[:, :5].flatten().tolist()) for w in x}
    assert not any(tuple(w[:, :5].flatten().tolist()) in train for w in task.val.tensors[0])


def test_spoken_digits_fixed_length_mfccs():
    a, b = _load("spoken_digits", seed=0), _load("spoken_digits", seed=3)
    assert a.input_shape == (1, 32, 13) and a.modality == "audio"
    assert (len(a.train), len(a.val), len(a.test)) == (2100, 300, 600)
    # the same recordings (standardized with each seed's own training statistics)
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert torch.allclose(a.test.tensors[0], b.test.tensors[0], atol=0.05)
    assert (np.bincount(a.test.tensors[1].numpy()) == 60).all()


@pytest.mark.slow
def test_a_small_cnn_learns_fashion_mnist_from_a_slice():
    """A broken loader (labels shuffled against images, wrong scaling) stays near 10%."""
    task = _load("fashion_mnist", train_size=3000, test_size=1000)
    model = sc.models.create("lenet5", task, seed=0)
    sc.fit(model, task, epochs=2, lr=3e-3, seed=0, progress=False)
    assert sc.evaluate(model, task) > 0.65


@pytest.mark.slow
def test_a_one_d_cnn_learns_the_watch_exercises():
    task = _load("watch_imu")
    model = sc.models.create("resnet8", task, seed=0)
    sc.fit(model, task, epochs=3, lr=3e-3, seed=0, progress=False)
    assert sc.evaluate(model, task) > 0.5  # 7 classes: chance is 0.14


class Boom:
    def __reduce__(self):
        return (print, ("ran",))


def test_the_unpickler_refuses_anything_but_arrays_and_containers(capsys):
    good = pickle.dumps({"x": [np.arange(3.0)], "y": np.array([1, 2]), "name": "a"})
    data = real.SafeUnpickler(io.BytesIO(good)).load()
    assert data["x"][0].tolist() == [0.0, 1.0, 2.0] and data["name"] == "a"
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load builtins.print"):
        real.SafeUnpickler(io.BytesIO(pickle.dumps(Boom()))).load()
    assert "ran" not in capsys.readouterr().out


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(real.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps seglearn==1\.2\.5"):
        sc.data.load("watch_imu")
    monkeypatch.setenv("SECATEURS_FASHION_MNIST", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        sc.data.load("fashion_mnist")


def test_idx_files_are_checked(tmp_path):
    good = tmp_path / "ok-idx1-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(b"\0\0\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert real.read_idx(good).tolist() == [1, 2, 3]
    short = tmp_path / "short"
    short.write_bytes(b"\0\0\x08\x01" + (4).to_bytes(4, "big") + bytes([1, 2, 3]))
    with pytest.raises(ValueError, match=r"header says \(4,\), the file holds 3 bytes"):
        real.read_idx(short)
    with pytest.raises(ValueError, match="not an IDX file"):
        (tmp_path / "bad").write_bytes(b"PK\x03\x04")
        real.read_idx(tmp_path / "bad")
