import copy

import pytest
import torch

import secateurs as sc


@pytest.fixture(scope="module")
def trained(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    sc.fit(model, digits, epochs=8, lr=3e-3, progress=False)
    return model.eval()


def test_gates_with_threshold_zero_equal_the_dense_model(trained, digits):
    gated = copy.deepcopy(trained)
    sc.prune.gate_channels(gated, ["0", "3"], threshold=0.0)
    x = digits.example_inputs(16)
    with torch.no_grad():
        assert torch.equal(gated.eval()(x), trained(x))
    report = sc.measure.executed_macs(gated, digits.test.tensors[0])
    assert report.executed == report.dense and report.active == {"0": 1.0, "3": 1.0}


def test_trained_gates_skip_channels_per_input(trained, digits):
    gated = copy.deepcopy(trained)
    gates = sc.prune.gate_channels(gated, ["0", "3"], threshold=0.5)
    budget = sc.prune.GateBudget(gates, target=0.4, weight=2.0)
    sc.fit(gated, digits, epochs=6, lr=1e-2, losses=[budget], progress=False)
    report = sc.measure.executed_macs(gated, digits.test.tensors[0])
    assert max(float(g.active.std()) for g in gates) > 0  # inputs differ in what they get
    dense = sc.measure.profile(gated, digits.example_inputs(), latency=False).macs
    assert report.dense == dense
    assert report.executed < 0.8 * report.dense and min(report.active.values()) < 0.6
    assert sc.evaluate(gated, digits) > 0.6
    # the gated layer's saving is its MACs times its closed fraction
    layer = sum(
        r.macs
        for r in sc.measure.profile(gated, digits.example_inputs(), latency=False).layers
        if r.module == "3"
    )
    closed = 1 - report.active["3"]
    assert report.dense - report.executed >= closed * layer - 1


def test_gate_channels_rejects_what_it_cannot_gate(trained):
    with pytest.raises(ValueError, match="gates convolutions; '9' is Linear"):
        sc.prune.gate_channels(copy.deepcopy(trained), ["9"])
    with pytest.raises(ValueError, match="'nope' is nothing"):
        sc.prune.gate_channels(copy.deepcopy(trained), ["nope"])


def test_gated_layers_are_refused_by_channel_pruning(trained, digits):
    from secateurs.graph import GraphError

    gated = copy.deepcopy(trained)
    sc.prune.gate_channels(gated, ["3"])
    with pytest.raises(GraphError, match=r"layer '3' carries submodules \['gate'\]"):
        sc.prune.channels(gated, digits.example_inputs(), ratio=0.3)
