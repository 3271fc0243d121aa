import pytest
import torch

from tests.graph.helpers import prune_and_compare, randomize_norms
from tests.graph.models import SYNTHETIC


def _build(name, seed=0):
    factory, shape = SYNTHETIC[name]
    torch.manual_seed(seed)
    model = factory()
    randomize_norms(model, seed)
    return model, torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_keeps_outputs_of_zeroed_channels(name, seed):
    model, x = _build(name, seed)
    summary = prune_and_compare(model, x, ratio=0.4, seed=seed)
    assert summary["removed"] > 0
    assert summary["macs_after"] < summary["macs_before"]
