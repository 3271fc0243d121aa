import pytest
import torch

import secateurs as sc
from secateurs.models.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import synthetic_task

ALL_MODELS = sc.models.list_models()
CONV_MODELS = [m for m in ALL_MODELS if m not in ("mlp", "lenet_300_100", "elm")]
TASK_SHAPES = {"image8": (1, 8, 8), "signal40": (1, 40), "mfcc": (1, 49, 10), "rgb32": (3, 32, 32)}


def test_zoo_lists_every_architecture():
    assert ALL_MODELS == [
        "ds_cnn",
        "efficientnet",
        "elm",
        "ghostnet",
        "lenet5",
        "lenet_300_100",
        "masr_classifier",
        "mlp",
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3",
        "resnet8",
        "shufflenet_residual",
        "shufflenet_v1",
        "shufflenet_v2",
        "xception",
    ]
    assert sc.models.list_models(pattern="*mobilenet*") == [
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3",
    ]


@pytest.mark.parametrize("shape", list(TASK_SHAPES), ids=list(TASK_SHAPES))
@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_runs_forward_and_backward(name, shape):
    task = synthetic_task(TASK_SHAPES[shape], num_classes=5, n=6)
    model = sc.models.create(name, task, width=0.5)
    x = task.example_inputs(3)
    out = model(x)
    assert out.shape == (3, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # at least one trainable weight receives a nonzero gradient
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_use_1d_layers_for_signals(name, mnist1d):
    model = sc.models.create(name, mnist1d, width=0.5)
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.Conv1d in kinds and torch.nn.Conv2d not in kinds


@pytest.mark.parametrize("name", [m for m in ALL_MODELS if m != "lenet_300_100"])
def test_width_multiplier_shrinks_the_model(name, digits):
    def params(width):
        model = sc.models.create(name, digits, width=width)
        return sum(p.numel() for p in model.parameters())

    assert params(0.5) < params(1.0) < params(2.0)


def test_tiny_inputs_keep_a_feature_map_of_at_least_two(digits, mnist1d):
    # MobileNet V2 asks for four stride-2 stages after its stem (stride 1 on tiny inputs):
    # 8x8 can take two of them, a length of 40 all four (40, 20, 10, 5, 3)
    for task, final in ((digits, (2, 2)), (mnist1d, (3,))):
        model = sc.models.create("mobilenet_v2", task)
        prof = sc.measure.profile(model, task.example_inputs(), latency=False)
        last_conv = [r for r in prof.layers if r.op == "convolution"][-1]
        assert last_conv.output_shape[2:] == final


def test_imagenet_sized_inputs_keep_the_stride_two_stem():
    task = synthetic_task((3, 64, 64), num_classes=10, n=2)
    model = sc.models.create("mobilenet_v1", task, width=0.25)
    prof = sc.measure.profile(model, task.example_inputs(), latency=False)
    assert next(r for r in prof.layers if r.op == "convolution").output_shape == (1, 8, 32, 32)


def test_unknown_model_lists_known_ones(digits):
    with pytest.raises(
        ValueError, match=r"unknown model 'vgg16'; known models: ds_cnn, efficientnet, elm, "
    ):
        sc.models.create("vgg16", digits)


def test_width_must_be_positive(digits):
    with pytest.raises(ValueError, match=r"width must be > 0.0, got 0.0"):
        sc.models.create("mlp", digits, width=0)


def test_resolution_outside_unit_interval_fails(digits):
    with pytest.raises(ValueError, match=r"resolution must be in \(0, 1\], got 1.5"):
        sc.models.create("mobilenet_v1", digits, resolution=1.5)


def test_model_that_does_not_fit_the_task_fails_before_training(digits, mnist1d):
    model = sc.models.create("mlp", mnist1d)
    with pytest.raises(ValueError, match=r"does not accept the inputs of task 'digits'"):
        sc.fit(model, digits, epochs=1)
    wrong_classes = sc.models.create("mlp", synthetic_task((1, 8, 8), num_classes=3))
    with pytest.raises(ValueError, match=r"returns \(2, 3\) .* expected \(2, 10\)"):
        sc.fit(wrong_classes, digits, epochs=1)


def test_channel_shuffle_interleaves_groups():
    shuffle = sc.models.ChannelShuffle(3)
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert shuffle(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    x1 = torch.arange(6.0).reshape(1, 6, 1)
    assert shuffle(x1).flatten().tolist() == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_shufflenet_v1_divides_channels_for_every_group_count(groups, digits):
    model = sc.models.create("shufflenet_v1", digits, groups=groups, width=0.25)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0


def test_shufflenet_v1_rejects_unknown_group_count(digits):
    with pytest.raises(ValueError, match=r"groups must be one of \[1, 2, 3, 4, 8\], got 5"):
        sc.models.create("shufflenet_v1", digits, groups=5)


def test_ghost_module_keeps_exactly_the_requested_channels(digits):
    from secateurs.models.ghostnet import GhostModule
    from secateurs.models.layers import FeatureMap

    module = GhostModule(FeatureMap((1, 8, 8)), 4, 7)
    assert module(torch.randn(2, 4, 8, 8)).shape == (2, 7, 8, 8)


def test_checkpoint_round_trip_restores_outputs(tmp_path, digits):
    model = sc.models.create("mobilenet_v2", digits, width=0.25, last_channels=64).eval()
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(model, path, "mobilenet_v2", digits, width=0.25, last_channels=64)
    loaded, meta = load_checkpoint(path, digits)
    x = digits.example_inputs(4)
    assert torch.equal(model(x), loaded(x))
    assert meta["model"] == "mobilenet_v2" and meta["kwargs"] == {"last_channels": 64}
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left


def test_checkpoint_of_another_task_is_refused(tmp_path, digits, mnist1d):
    path = tmp_path / "model.pt"
    save_checkpoint(sc.models.create("mlp", digits), path, "mlp", digits)
    with pytest.raises(ValueError, match="was trained on task 'digits', not 'mnist1d'"):
        load_checkpoint(path, mnist1d)


def test_seed_fixes_the_initial_weights(digits):
    a = sc.models.create("lenet5", digits, seed=1)
    b = sc.models.create("lenet5", digits, seed=1)
    c = sc.models.create("lenet5", digits, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
