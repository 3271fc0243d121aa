from __future__ import annotations

import numpy as np
import pytest

import secateurs as sc
from secateurs.data.task import Task, tensor_dataset


@pytest.fixture(scope="session")
def digits() -> Task:
    return sc.data.load("digits")


@pytest.fixture(scope="session")
def mnist1d() -> Task:
    return sc.data.load("mnist1d")


@pytest.fixture(scope="session")
def kws() -> Task:
    return sc.data.load("kws")


def synthetic_task(input_shape, num_classes: int = 4, n: int = 24, seed: int = 0) -> Task:
    """A small random task of any input shape, for shape and cost tests."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *input_shape)).astype(np.float32)
    y = np.arange(n) % num_classes
    ds = tensor_dataset(x, y)
    modality = "signal" if len(input_shape) == 2 else "image"
    return Task("synthetic", modality, ds, ds, ds, tuple(input_shape), num_classes)


@pytest.fixture(scope="session")
def kws_shaped() -> Task:
    """A task shaped like 49x10 MFCC keyword spotting with 12 classes."""
    return synthetic_task((1, 49, 10), num_classes=12)


@pytest.fixture(scope="session")
def trained_resnet8(digits):
    model = sc.models.create("resnet8", digits, seed=0)
    sc.fit(model, digits, epochs=4, lr=3e-3, seed=0, progress=False)
    return model.eval()
