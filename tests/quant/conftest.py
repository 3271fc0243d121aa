from __future__ import annotations

import pytest

import secateurs as sc


@pytest.fixture(scope="session")
def trained_lenet5(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    sc.fit(model, digits, epochs=10, lr=3e-3, seed=0, progress=False)
    return model.eval()
