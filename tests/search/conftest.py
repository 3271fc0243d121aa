import pytest

import secateurs as sc


@pytest.fixture(scope="session")
def trained_lenet(digits):
    """LeNet-5 on digits: four channel groups (6, 16, 120 and 84 channels)."""
    model = sc.models.create("lenet5", digits, seed=0)
    sc.fit(model, digits, epochs=6, lr=3e-3, seed=0, progress=False)
    return model.eval()
