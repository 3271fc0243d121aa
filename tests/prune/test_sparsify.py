import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.measure import encoding_bytes


@pytest.fixture(scope="module")
def trained(digits):
    model = sc.models.create("lenet5", digits, seed=0)
    sc.fit(model, digits, epochs=8, lr=3e-3, progress=False)
    return model


def _copy(model):
    return copy.deepcopy(model)


def _layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_global_magnitude_sparsity_is_exact_and_masks_survive_training(trained, digits):
    model = _copy(trained)
    report = sc.prune.sparsify(model, sparsity=0.8)
    assert report.sparsity == pytest.approx(0.8, abs=1e-3)
    zeros = [(m.weight == 0).clone() for m in _layers(model)]
    sc.fit(model, digits, epochs=2, lr=3e-3, progress=False)
    for z, m in zip(zeros, _layers(model)):
        assert bool((m.weight[z] == 0).all())  # masked weights stay exactly zero
    assert sc.prune.sparsity_report(model).sparsity >= 0.8
    assert sc.evaluate(model, digits) > 0.8


def test_local_scope_gives_every_layer_the_same_sparsity(trained):
    model = _copy(trained)
    report = sc.prune.sparsify(model, sparsity=0.5, scope="local")
    assert all(abs(layer.sparsity - 0.5) < 0.01 for layer in report.layers)


def test_sparsifying_again_keeps_earlier_zeros(trained):
    model = _copy(trained)
    sc.prune.sparsify(model, sparsity=0.5)
    first = [(m.weight == 0).clone() for m in _layers(model)]
    report = sc.prune.sparsify(model, sparsity=0.7)
    assert report.sparsity == pytest.approx(0.7, abs=1e-3)
    assert all(bool(m.weight[z].eq(0).all()) for z, m in zip(first, _layers(model)))


def test_n_of_m_pattern_holds_exactly(trained):
    model = _copy(trained)
    sc.prune.sparsify(model, granularity="2:4")
    for m in _layers(model):
        w = m.weight.detach()
        w = w.flatten(2).transpose(1, 2) if w.dim() > 2 else w.unsqueeze(1)  # out x pos x in
        cin = w.shape[-1] - w.shape[-1] % 4
        groups = w[..., :cin].reshape(*w.shape[:-1], -1, 4)
        if groups.numel():
            assert bool(((groups != 0).sum(-1) <= 2).all())
    with pytest.raises(ValueError, match=r"fixes the sparsity at 0.5; got 0.7"):
        sc.prune.sparsify(_copy(trained), sparsity=0.7, granularity="2:4")


def test_filterlet_masks_zero_whole_input_channel_vectors(trained):
    model = _copy(trained)
    sc.prune.sparsify(model, sparsity=0.5, granularity="filterlet")
    conv = model[3]  # 6 input channels
    nonzero = (conv.weight.detach() != 0).flatten(2)  # out x in x positions
    per_vector = nonzero.sum(1)
    assert bool(((per_vector == 0) | (per_vector == nonzero.shape[1])).all())
    assert int((per_vector == 0).sum()) > 0


def test_block_masks_zero_whole_blocks(trained):
    model = _copy(trained)
    sc.prune.sparsify(model, sparsity=0.5, granularity="block", block_size=4)
    w = model[9].weight.detach()  # Linear 120 -> 84
    blocks = w[:84, :120].reshape(21, 4, 30, 4).ne(0).sum((1, 3))
    assert bool(((blocks == 0) | (blocks == 16)).all()) and int((blocks == 0).sum()) > 0


def test_strip_bakes_masks_and_keeps_outputs(trained, digits):
    model = _copy(trained).eval()
    sc.prune.sparsify(model, sparsity=0.6)
    x = digits.example_inputs(8)
    with torch.no_grad():
        before = model(x)
    sc.prune.strip(model)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert sc.prune.sparsity_report(model).sparsity == pytest.approx(0.6, abs=1e-3)


def test_masks_travel_through_save_and_load(tmp_path, trained, digits):
    model = _copy(trained).eval()
    sc.prune.sparsify(model, sparsity=0.7)
    torch.save(model.state_dict(), tmp_path / "sparse.pt")
    fresh = sc.models.create("lenet5", digits, seed=3)
    sc.prune.sparsify(fresh, sparsity=0.1)  # same parametrizations, any mask
    fresh.load_state_dict(torch.load(tmp_path / "sparse.pt", weights_only=True))
    x = digits.example_inputs(4)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))
    assert sc.prune.sparsity_report(fresh).sparsity == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize("importance", ["taylor", "random"])
def test_other_importances(trained, digits, importance):
    model = _copy(trained)
    report = sc.prune.sparsify(model, sparsity=0.5, importance=importance, data=digits)
    assert report.sparsity == pytest.approx(0.5, abs=1e-3)


def test_magnitude_beats_random_without_retraining(trained, digits):
    accuracy = {}
    for importance in ("magnitude", "random"):
        model = _copy(trained)
        sc.prune.sparsify(model, sparsity=0.7, importance=importance)
        accuracy[importance] = sc.evaluate(model, digits)
    assert accuracy["magnitude"] > 0.75 and accuracy["random"] < 0.4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 1.0}, r"in \[0, 1\); got 1.0"),
        ({"sparsity": -0.1}, "sparsity must be >= 0.0"),
        (
            {"sparsity": 0.5, "granularity": "row"},
            "granularity must be one of 'weight', 'filterlet', 'block'",
        ),
        ({"sparsity": 0.5, "granularity": "4:2"}, "must be N:M with 0 < N < M"),
        (
            {"sparsity": 0.5, "importance": "hessian"},
            "importance must be one of 'magnitude', 'taylor', 'lrp', 'lrp_magnitude', 'random'",
        ),
        ({"sparsity": 0.5, "ignored": ["nope"]}, r"ignored names modules \['nope'\]"),
        (
            {"sparsity": 0.5, "importance": "lrp_magnitude", "relevance_exponent": 1.5},
            "relevance_exponent must be <= 1.0",
        ),
        (
            {"sparsity": 0.5, "relevance_exponent": 0.25},
            "importance 'magnitude' does not use it",
        ),
    ],
)
def test_bad_arguments_fail_clearly(trained, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sc.prune.sparsify(_copy(trained), **kwargs)


def test_schedules(digits, trained):
    assert sc.prune.SparsitySchedule.iterative(0.6, steps=3).targets == pytest.approx(
        {1: 0.2, 2: 0.4, 3: 0.6}
    )
    gradual = sc.prune.SparsitySchedule.gradual(0.0, 0.8, start=1, epochs=4).targets
    assert gradual[1] == 0.0 and gradual[5] == pytest.approx(0.8)
    assert gradual[3] == pytest.approx(0.8 + (0.0 - 0.8) * (1 - 2 / 4) ** 3)
    model = _copy(trained)
    schedule = sc.prune.SparsitySchedule.gradual(0.2, 0.8, start=1, epochs=3)
    sc.fit(model, digits, epochs=5, lr=2e-3, callbacks=[schedule], progress=False)
    assert [e for e, _ in schedule.applied] == [1, 2, 3, 4]
    assert sc.prune.sparsity_report(model).sparsity == pytest.approx(0.8, abs=1e-3)
    assert sc.evaluate(model, digits) > 0.8


def test_encoding_bytes_match_hand_counts():
    w = torch.zeros(4, 8)  # 4 rows of 8 columns, 5 nonzeros
    w[0, 1] = w[0, 5] = w[2, 0] = w[3, 7] = w[3, 2] = 1.0
    sizes = encoding_bytes(w, bits=8, is_conv=False)
    assert sizes == {"dense": 32, "bitmask": 4 + 5, "csr": 5 + 5 * 1 + 5 * 2}
    rows = torch.zeros(2, 10)  # each row's mask padded to a byte: 2 x 2 bytes
    rows[0, 9] = rows[1, 0] = rows[1, 3] = 1.0
    assert encoding_bytes(rows, bits=8, is_conv=False)["bitmask"] == 2 * 2 + 3
    conv = torch.zeros(2, 3, 3, 3)
    conv[0, :, 1, 1] = 1.0  # one filterlet of 3 weights
    sizes = encoding_bytes(conv, bits=8, is_conv=True)
    # 3 weights and 1 byte padding them to a word, their position index, a filterlet count
    # per filter: two nibbles, 1 byte
    assert sizes["filterlet_csr"] == 3 + 1 + 1 + 1 and sizes["dense"] == 54
    pointwise = torch.zeros(3, 4, 1, 1)  # one position: no index; 3 nibbles in 2 bytes
    pointwise[1, :, 0, 0] = 1.0
    assert encoding_bytes(pointwise, bits=8, is_conv=True)["filterlet_csr"] == 4 + 0 + 2
    wide = torch.zeros(2, 1, 4, 4)  # 16 positions: a byte per count
    wide[0, 0, 1, 2] = 1.0
    assert encoding_bytes(wide, bits=8, is_conv=True)["filterlet_csr"] == 1 + 3 + 1 + 2
    big = torch.zeros(2, 1, 16, 16)  # 256 positions: two-byte indices and row pointers
    big[1, 0, 3, 3] = 1.0
    assert encoding_bytes(big, bits=8, is_conv=True)["filterlet_csr"] == 1 + 2 + 3 * 2
    unread = torch.zeros(4, 8, 1, 1)  # no filter reads inputs other than 2 and 5
    unread[:, [2, 5]] = 1.0
    # filterlets store those 2 weights, not 8 (2 bytes pad the last to a word); the layer
    # lists the 2 channels
    assert encoding_bytes(unread, bits=8, is_conv=True)["filterlet_csr"] == 4 * 2 + 2 + 2 + 2


def test_flash_takes_the_smallest_encoding(trained, digits):
    dense = sc.measure.profile(trained, digits.example_inputs(), weight_bits=8, latency=False)
    model = _copy(trained)
    sc.prune.sparsify(model, sparsity=0.9)
    sparse = sc.measure.profile(model, digits.example_inputs(), weight_bits=8, latency=False)
    assert {w.encoding for w in dense.weights} == {"dense"}
    assert sparse.flash_bytes < 0.5 * dense.flash_bytes
    for w in sparse.weights:  # a weight tensor with under 40% nonzeros is never dense
        assert w.encoding != "dense" or w.nonzero >= 0.4 * w.numel


def test_lrp_relevance_is_conserved_layer_to_layer(digits):
    from secateurs.prune.lrp import relevance

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 16, bias=False),
        nn.ReLU(),
        nn.Linear(16, 10, bias=False),
    )
    x, y = digits.test.tensors[0][:16], digits.test.tensors[1][:16]
    per_layer, weights = relevance(net, x, y, eps=1e-9)
    totals = [float(r.sum()) for r in per_layer]
    assert max(totals) - min(totals) < 1e-4 * max(1.0, abs(totals[0]))
    assert set(weights) == {"1", "3", "5"} and weights["1"].shape == (32, 64)
    # a weight's relevances over its outputs add up to its input neuron's relevance
    assert torch.allclose(weights["5"].sum(0), per_layer[5].sum(0), atol=1e-5)


def test_lrp_pruning_scores_count_each_sample_s_relevance_by_its_size(digits):
    """The criterion sums |a·w·s| over samples: one sample gives |signed relevance|; over a
    batch it is at least the size of the signed sum, and more where samples disagree."""
    from secateurs.prune.lrp import relevance, weight_relevance

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = digits.test.tensors[0][:16], digits.test.tensors[1][:16]
    _, signed = relevance(net, x[:1], y[:1])
    _, absolute = relevance(net, x[:1], y[:1], absolute=True)
    for name in signed:
        assert torch.allclose(absolute[name], signed[name].abs(), atol=1e-6)
    _, signed = relevance(net, x, y)
    totals = weight_relevance(net, [(x, y)])
    for name in signed:
        assert (totals[name] >= signed[name].abs() - 1e-5).all()
    # inputs of either sign: samples disagree on the first layer's weights, and add up
    assert ((totals["1"] - signed["1"].abs()) > 0.1 * totals["1"].mean()).float().mean() > 0.1
    conv = sc.models.create("ds_cnn", digits)
    _, signed = relevance(conv, x[:1], y[:1])
    _, absolute = relevance(conv, x[:1], y[:1], absolute=True)
    for name in signed:  # a shared weight: |sum over positions| <= sum of |.|
        assert (absolute[name] >= signed[name].abs() - 1e-5).all()


def test_lrp_sparsifies_a_chain_and_rejects_other_models(trained, digits):
    model = _copy(trained)
    report = sc.prune.sparsify(model, sparsity=0.5, importance="lrp", data=digits, scope="local")
    assert report.sparsity == pytest.approx(0.5, abs=1e-3)
    sc.prune.sparsify(
        model, sparsity=0.6, importance="lrp", data=digits, scope="local"
    )  # masked again
    resnet = sc.models.create("resnet8", digits)
    with pytest.raises(ValueError, match="not its layers one after another"):
        sc.prune.sparsify(resnet, sparsity=0.5, importance="lrp", data=digits)
    with pytest.raises(ValueError, match=r"LRP walks chains .* '1' is a Upsample"):
        sc.prune.lrp.chain(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Upsample(scale_factor=2)))


def test_lrp_walks_padding_and_batchnorm_of_a_ds_cnn(digits):
    from secateurs.prune.lrp import relevance

    torch.manual_seed(0)
    model = sc.models.create("ds_cnn", digits).train()  # dropout on: relevance uses eval
    assert any(isinstance(m, nn.ConstantPad2d) for m in model.modules())
    x, y = digits.test.tensors[0][:8], digits.test.tensors[1][:8]
    per_layer, weights = relevance(model, x, y, eps=1e-9)
    assert per_layer[0].shape == x.shape
    convs = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(weights) == convs
    # without biases and BatchNorm shifts, relevance is conserved from logit to input
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.zero_()
        if isinstance(m, nn.Linear):
            m.bias.data.zero_()
    per_layer, _ = relevance(model, x, y, eps=1e-9)
    assert model.training  # left as it was
    total = float(per_layer[-1].sum())
    assert float(per_layer[0].sum()) == pytest.approx(total, rel=1e-3)


def test_lrp_magnitude_scores_are_the_geometric_mean_of_relevance_and_magnitude(trained, digits):
    from secateurs.prune.lrp import weight_relevance
    from secateurs.prune.unstructured import _layers, _scores

    model = _copy(trained)
    layers = _layers(model, ())
    scores = _scores(model, layers, "lrp_magnitude", digits, 0)
    relevance = weight_relevance(model, sc.prune.calibration.batches(digits))
    for name, layer in layers.items():
        expected = (relevance[name].clamp_min(0) * layer.weight.detach().abs()).sqrt()
        assert torch.allclose(scores[name], expected)
    keep = sc.evaluate(model, digits)
    sc.prune.sparsify(model, sparsity=0.6, importance="lrp_magnitude", data=digits)
    assert sc.prune.sparsity_report(model).sparsity == pytest.approx(0.6, abs=1e-3)
    assert sc.evaluate(model, digits) > keep - 0.08  # one-shot, no retraining (random: ~0.24)


def test_relevance_exponent_blends_lrp_into_magnitude(trained, digits):
    from secateurs.prune.lrp import weight_relevance
    from secateurs.prune.unstructured import _layers, _scores

    model = _copy(trained)
    layers = _layers(model, ())
    relevance = weight_relevance(model, sc.prune.calibration.batches(digits))
    scores = _scores(model, layers, "lrp_magnitude", digits, 0, exponent=0.25)
    for name, layer in layers.items():
        expected = relevance[name] ** 0.25 * layer.weight.detach().abs() ** 0.75
        assert torch.allclose(scores[name], expected)

    def masks(**kwargs):  # p = 1 ranks as relevance alone, p = 0 as magnitude alone
        model = _copy(trained)
        sc.prune.sparsify(model, sparsity=0.7, data=digits, **kwargs)
        return [m.parametrizations.weight[0].mask for m in _layers(model, ()).values()]

    for p, alone in ((1.0, "lrp"), (0.0, "magnitude")):
        blended = masks(importance="lrp_magnitude", relevance_exponent=p)
        assert all(torch.equal(a, b) for a, b in zip(blended, masks(importance=alone)))
    assert not all(
        torch.equal(a, b) for a, b in zip(masks(importance="lrp"), masks(importance="magnitude"))
    )


def test_learned_masks_train_to_the_target_sparsity(digits):
    model = sc.models.create("lenet_300_100", digits, seed=0)
    sc.fit(model, digits, epochs=8, lr=3e-3, progress=False)
    sc.prune.learn_masks(model, 0.9)
    learned = [m for m in model.modules() if isinstance(m, sc.prune.LearnedMask)]
    start = [m.hard_mask().clone() for m in learned]
    sc.fit(model, digits, epochs=5, lr=1e-3, progress=False)
    assert sc.prune.sparsity_report(model).sparsity == pytest.approx(0.9, abs=1e-3)
    assert any(bool((m.hard_mask() != s).any()) for m, s in zip(learned, start))  # it learned
    assert sc.evaluate(model, digits) > 0.9
    x = digits.example_inputs(4)
    with torch.no_grad():
        before = model.eval()(x)
    sc.prune.fix_masks(model)
    assert not any(isinstance(m, sc.prune.LearnedMask) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_fixing_learned_masks_keeps_the_weights_other_parametrizations(digits):
    """fix_masks swaps each LearnedMask for the WeightMask it learned, in its place; a
    parametrization of someone else's on the same weight stays, outputs unchanged."""
    from torch.nn.utils import parametrize

    class Halve(torch.nn.Module):
        def forward(self, w):
            return w * 0.5

    model = sc.models.create("lenet_300_100", digits, seed=0)
    sc.prune.learn_masks(model, 0.8)
    layer = next(m for m in model.modules() if parametrize.is_parametrized(m, "weight"))
    parametrize.register_parametrization(layer, "weight", Halve())
    x = digits.example_inputs(4)
    with torch.no_grad():
        before = model.eval()(x)
    sc.prune.fix_masks(model)
    kinds = [type(p).__name__ for p in layer.parametrizations["weight"]]
    assert kinds == ["WeightMask", "Halve"]
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_learned_masks_take_their_layer_shares_from_the_scope(trained):
    def shares(model):
        return [
            float((m.hard_mask() == 0).double().mean())
            for m in model.modules()
            if isinstance(m, sc.prune.LearnedMask)
        ]

    local = sc.prune.learn_masks(_copy(trained), 0.9, scope="local")
    assert shares(local) == pytest.approx([0.9] * len(shares(local)), abs=1e-2)
    lamp = sc.prune.learn_masks(_copy(trained), 0.9)  # the default: LAMP's layer shares
    reference = sc.prune.sparsify(_copy(trained), sparsity=0.9, scope="lamp")
    assert shares(lamp) == pytest.approx([layer.zeros / layer.numel for layer in reference.layers])
    assert max(shares(lamp)) - min(shares(lamp)) > 0.05  # not one share for all
    assert sc.prune.sparsity_report(lamp).sparsity == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(ValueError, match="scope"):
        sc.prune.learn_masks(_copy(trained), 0.9, scope="layerwise")
    with pytest.raises(ValueError, match="importance"):
        sc.prune.learn_masks(_copy(trained), 0.9, importance="gradient")
    every = [name for name, m in trained.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with pytest.raises(ValueError, match="no convolution or linear layer"):
        sc.prune.learn_masks(_copy(trained), 0.9, ignored=every)


def test_lrp_driven_mask_learning_starts_from_the_lrp_masks(trained, digits):
    model = sc.prune.learn_masks(_copy(trained), 0.8, importance="lrp_magnitude", data=digits)
    reference = _copy(trained)
    sc.prune.sparsify(
        reference, sparsity=0.8, importance="lrp_magnitude", scope="lamp", data=digits
    )
    learned = [m for m in model.modules() if isinstance(m, sc.prune.LearnedMask)]
    fixed = [m.parametrizations["weight"][0].mask for m in _layers(reference)]
    assert all(torch.equal(a.hard_mask(), b) for a, b in zip(learned, fixed, strict=True))
    for mask, layer in zip(learned, _layers(trained)):  # scores at the weights' scale
        assert float(mask.scores.detach().mean()) == pytest.approx(
            float(layer.weight.detach().abs().mean())
        )
    start = sc.evaluate(model, digits)
    sc.fit(model, digits, epochs=2, lr=1e-3, progress=False)
    assert sc.evaluate(model, digits) > max(start, 0.85)


def test_lamp_scores_match_the_definition_and_ignore_layer_scale(trained):
    scores = torch.tensor([3.0, 1.0, 2.0])
    # squared, over the sum of the squares at least as large: 9/9, 1/14, 4/13
    expected = torch.tensor([1.0, 1 / 14, 4 / 13], dtype=torch.float64)
    assert torch.allclose(sc.prune.lamp_scores(scores), expected)
    masks = {}
    for scale in (1.0, 100.0):
        model = _copy(trained)
        with torch.no_grad():
            _layers(model)[0].weight.mul_(scale)  # what a following BatchNorm would undo
        for scope in ("global", "lamp"):
            report = sc.prune.sparsify(
                model if scope == "lamp" else _copy(model), sparsity=0.9, scope=scope
            )
            assert report.sparsity == pytest.approx(0.9, abs=1e-3)
            masks[scope, scale] = [layer.zeros for layer in report.layers]
    assert masks["lamp", 1.0] == masks["lamp", 100.0]
    assert masks["global", 1.0] != masks["global", 100.0]
    assert all(layer.zeros < layer.numel for layer in sc.prune.sparsity_report(model).layers)
