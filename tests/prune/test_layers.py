import copy
import tempfile

import pytest
import torch

import secateurs as sc

SMALL_V2 = {
    "width": 0.5,
    "cfg": ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1)),
    "last_channels": 256,
}


@pytest.fixture(scope="module")
def trained_v2(digits):
    model = sc.models.create("mobilenet_v2", digits, seed=0, **SMALL_V2)
    sc.fit(model, digits, epochs=6, lr=3e-3, seed=0, progress=False)
    return model.eval()


def test_removable_are_residual_blocks_and_shape_keeping_units(digits, mnist1d):
    v2 = sc.models.create("mobilenet_v2", digits, **SMALL_V2)
    # the residual blocks whole; in blocks without a residual, the stride-1 depthwise unit
    assert sorted(sc.prune.removable(v2, digits.example_inputs())) == [
        "block1.conv.0",
        "block3",
        "block5",
        "block6.conv.1",
        "block7",
    ]
    ds = sc.models.create("ds_cnn", mnist1d)
    assert sorted(sc.prune.removable(ds, mnist1d.example_inputs())) == [
        "block1",
        "block2",
        "block3",
        "block4",
    ]


def test_a_dead_residual_block_goes_first_and_the_outputs_do_not_move(digits, trained_v2):
    model = copy.deepcopy(trained_v2)
    projection = model.block5.conv[-1]  # conv, BatchNorm: zero the BN's scale and shift
    torch.nn.init.zeros_(projection[1].weight)
    torch.nn.init.zeros_(projection[1].bias)
    x = digits.test.tensors[0][:64]
    with torch.no_grad():
        before = model(x)
    report = sc.prune.layers(model, digits.example_inputs(), count=1, data=digits)
    assert report.removed == ("block5",) and report.costs[0] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)
    assert not list(model.block5.parameters())
    assert report.macs_after < report.macs_before and report.params_after < report.params_before


def test_layers_reach_the_mac_target_and_the_model_recovers(digits, trained_v2):
    model = copy.deepcopy(trained_v2)
    x = digits.example_inputs()
    report = sc.prune.layers(model, x, target_macs=0.6, data=digits)
    prof = sc.measure.profile(model, x, latency=False)
    assert prof.macs == report.macs_after and report.macs_kept >= 0.58
    assert len(report.removed) >= 2 and report.macs_after < report.macs_before
    # it stopped at the target, or because each removal left would cross it
    if report.macs_kept > 0.62:
        for path in sc.prune.removable(model, x):
            trial = copy.deepcopy(model)
            sc.prune.layers(trial, x, count=1, data=digits, candidates=[path])
            kept = sc.measure.profile(trial, x, latency=False).macs / report.macs_before
            assert kept < 0.58
    sc.fit(model, digits, epochs=4, lr=3e-3, seed=0, progress=False)
    assert sc.evaluate(model, digits) > 0.9


def test_layer_pruned_model_exports_to_int8_c_bit_for_bit(digits, trained_v2):
    model = copy.deepcopy(trained_v2)
    sc.prune.layers(model, digits.example_inputs(), count=2, data=digits)
    q = sc.quant.quantize(model, digits)
    with tempfile.TemporaryDirectory() as out:
        sc.deploy.export_c(q, out)
        assert sc.deploy.verify_c(q, out, digits.test.tensors[0][:16]).bit_exact


def test_bad_arguments_name_the_fix(digits, trained_v2):
    model = copy.deepcopy(trained_v2)
    x = digits.example_inputs()
    with pytest.raises(ValueError, match="exactly one of target_macs= or count="):
        sc.prune.layers(model, x, data=digits)
    with pytest.raises(ValueError, match=r"the removable ones: .*'block3'"):
        sc.prune.layers(model, x, count=1, data=digits, candidates=["block2"])
    with pytest.raises(ValueError, match="has 5 removable layers"):
        sc.prune.layers(model, x, count=6, data=digits)
    with pytest.raises(ValueError, match="pass data=task"):
        sc.prune.layers(model, x, count=1)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        sc.prune.layers(model, x, target_macs=1.5, data=digits)


def test_layer_and_channel_pruned_model_saves_and_loads(digits, trained_v2, tmp_path):
    model = copy.deepcopy(trained_v2)
    x = digits.example_inputs()
    sc.prune.layers(model, x, count=2, data=digits)
    sc.prune.channels(model, x, ratio=0.3, scope="global")
    assert sum(step.get("remove", False) for step in sc.graph.pruning_history(model)) == 2
    sc.graph.save_pruned(model, tmp_path / "pruned.pt")
    fresh = sc.models.create("mobilenet_v2", digits, **SMALL_V2)
    loaded = sc.graph.load_pruned(fresh, tmp_path / "pruned.pt").eval()
    batch = digits.test.tensors[0][:32]
    with torch.no_grad():
        assert torch.equal(loaded(batch), model.eval()(batch))


def test_channels_take_what_whole_layers_leave_of_the_target(digits, trained_v2):
    model = copy.deepcopy(trained_v2)
    x = digits.example_inputs()
    layers = sc.prune.layers(model, x, target_macs=0.3, data=digits)
    assert layers.macs_kept > 0.32  # whole blocks alone cannot reach 0.3 on this model
    sc.prune.channels(
        model,
        x,
        target_macs=0.3 / layers.macs_kept,
        importance="taylor",
        scope="global",
        data=digits,
    )
    kept = sc.measure.profile(model, x, latency=False).macs / layers.macs_before
    assert abs(kept - 0.3) <= 0.02


def test_a_target_already_met_removes_nothing(digits, trained_v2):
    model = copy.deepcopy(trained_v2)
    report = sc.prune.layers(model, digits.example_inputs(), target_macs=1.0, data=digits)
    assert report.removed == () and report.macs_after == report.macs_before
