import random

import numpy as np
import pytest
import torch

import secateurs as sc


def _labels(ds):
    return ds.tensors[1].numpy()


def test_digits_split_is_stratified_70_15_15(digits):
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sizes == [1257, 270, 270]
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    whole = np.bincount(
        np.concatenate([_labels(digits.split(s)) for s in ("train", "val", "test")])
    )
    for split in ("train", "val", "test"):
        share = np.bincount(_labels(digits.split(split)), minlength=10) / len(digits.split(split))
        assert np.abs(share - whole / whole.sum()).max() < 0.01


def test_digits_inputs_are_scaled_to_unit_range(digits):
    x = digits.train.tensors[0]
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_digits_split_depends_on_seed_only():
    a, b, c = (
        sc.data.load("digits", seed=0),
        sc.data.load("digits", seed=0),
        sc.data.load("digits", seed=1),
    )
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])


def test_mnist1d_uses_default_split_with_validation_carved_from_train(mnist1d):
    assert (len(mnist1d.train), len(mnist1d.val), len(mnist1d.test)) == (3500, 500, 1000)
    assert mnist1d.input_shape == (1, 40) and mnist1d.modality == "signal"
    # the generator's own test set, in its own order
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())
    assert np.allclose(mnist1d.test.tensors[0][:, 0].numpy(), reference["x_test"], atol=1e-6)
    assert np.array_equal(_labels(mnist1d.test), reference["y_test"])


def test_mnist1d_leaves_global_random_state_alone():
    from secateurs.data.builtin import _mnist1d_arrays

    _mnist1d_arrays.cache_clear()
    random.seed(123)
    np.random.seed(123)
    sc.data.load("mnist1d")
    assert random.random() == random.Random(123).random()
    assert np.random.random() == np.random.RandomState(123).random_sample()


def test_example_inputs_and_loader(digits):
    x = digits.example_inputs(3)
    assert x.shape == (3, 1, 8, 8)
    assert torch.equal(x[0], digits.train[0][0])
    batches = list(digits.loader("val", batch_size=100))
    assert [len(b[1]) for b in batches] == [100, 100, 70]
    first = next(iter(digits.loader("train", batch_size=8, seed=5)))[1]
    again = next(iter(digits.loader("train", batch_size=8, seed=5)))[1]
    assert torch.equal(first, again)


def test_unknown_task_lists_known_ones():
    known = (
        r"unknown task 'cifar'; known tasks: digits, fashion_mnist, kws, mnist, mnist1d, "
        r"spoken_digits, watch_imu"
    )
    with pytest.raises(ValueError, match=known):
        sc.data.load("cifar")


def test_register_task_adds_a_loadable_name(digits):
    @sc.data.register_task("tiny_digits_for_test")
    def tiny(seed=0):
        return digits

    assert "tiny_digits_for_test" in sc.data.list_tasks()
    assert sc.data.load("tiny_digits_for_test") is digits
    with pytest.raises(ValueError, match="already registered"):
        sc.data.register_task("tiny_digits_for_test")(lambda seed=0: digits)
