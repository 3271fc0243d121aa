import pytest
import torch

import secateurs as sc
from tests.graph.helpers import prune_and_compare, randomize_norms

MODELS = sc.models.list_models()


@pytest.mark.parametrize("task_name", ["digits", "mnist1d"])
@pytest.mark.parametrize("name", MODELS)
def test_every_zoo_model_prunes_without_changing_zeroed_outputs(name, task_name, request):
    task = request.getfixturevalue(task_name)
    model = sc.models.create(name, task, width=0.5, seed=0)
    randomize_norms(model)
    summary = prune_and_compare(model, task.example_inputs(4), ratio=0.4, seed=3)
    assert summary["removed"] > 0
    assert summary["macs_after"] < 0.8 * summary["macs_before"]


def test_shufflenet_keeps_shuffle_groups_aligned(digits):
    """Channel shuffle is a permutation that depends on the width: pruning must remove the
    channels at one position of every shuffle group together, or the shuffle scrambles."""
    model = sc.models.create("shufflenet_v2", digits, width=0.5, seed=0, stage_repeats=(2, 2, 2))
    randomize_norms(model)
    prune_and_compare(model, digits.example_inputs(2), ratio=0.5, seed=7)
    for m in model.modules():
        if isinstance(m, sc.models.ChannelShuffle):
            continue
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            assert m.in_channels == m.out_channels == m.groups  # depthwise stays depthwise
