"""Zoo models reach a stated accuracy on digits; the ELM's elastic net makes a sparse head."""

import warnings

import pytest
import torch

import secateurs as sc

SMALL_MOBILENET_V2 = {
    "width": 0.5,
    "cfg": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1)),
    "last_channels": 256,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, kwargs, epochs, threshold",
    [
        ("mlp", {}, 15, 0.94),
        ("lenet5", {}, 20, 0.92),
        ("mobilenet_v2", SMALL_MOBILENET_V2, 10, 0.94),
    ],
)
def test_model_trains_to_stated_accuracy_on_digits(name, kwargs, epochs, threshold, digits):
    model = sc.models.create(name, digits, **kwargs)
    history = sc.fit(model, digits, epochs=epochs, lr=3e-3, progress=False)
    assert history.train_loss[-1] < history.train_loss[0] / 4
    assert sc.evaluate(model, digits) >= threshold


def test_elm_solves_digits_in_closed_form_with_a_sparse_head(digits):
    model = sc.models.create("elm", digits)
    hidden_before = model.hidden.weight.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = sc.fit(model, digits)
    assert len(history) == 1
    assert torch.equal(model.hidden.weight, hidden_before)  # the random layer never trains
    assert sc.evaluate(model, digits) >= 0.93
    assert float((model.output.weight == 0).float().mean()) > 0.5  # L1 zeroes most weights


def test_elm_more_l1_gives_a_sparser_head(digits):
    def zeros(l1_ratio):
        model = sc.models.create("elm", digits, hidden=128)
        model.fit_closed_form(digits, alpha=1e-3, l1_ratio=l1_ratio)
        return int((model.output.weight == 0).sum())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert zeros(0.0) == 0 < zeros(0.9)


def test_elm_rejects_loss_terms(digits):
    model = sc.models.create("elm", digits, hidden=16)
    with pytest.raises(ValueError, match="solved in closed form"):
        sc.fit(model, digits, losses=[lambda step: step.outputs.sum() * 0])
