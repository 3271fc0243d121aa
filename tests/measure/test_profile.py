import pytest
import thop
import torch
from torch import nn
from torch.nn.utils import parametrize

import secateurs as sc


def _profile(model, x, **kw):
    return sc.measure.profile(model, x, latency=False, **kw)


STANDARD_LAYERS = [
    ("conv2d", nn.Conv2d(3, 8, 3, padding=1), (1, 3, 16, 16)),
    ("conv2d_strided_bias", nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=True), (1, 3, 17, 17)),
    ("conv2d_grouped", nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False), (1, 8, 10, 10)),
    ("conv2d_depthwise", nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (1, 8, 10, 10)),
    ("conv2d_pointwise", nn.Conv2d(16, 32, 1, bias=False), (1, 16, 7, 7)),
    ("conv1d", nn.Conv1d(4, 6, 5, padding=2), (1, 4, 40)),
    ("conv1d_depthwise", nn.Conv1d(6, 6, 3, groups=6), (1, 6, 40)),
    ("linear", nn.Linear(64, 10), (1, 64)),
    ("linear_batched", nn.Linear(64, 10), (4, 64)),
    (
        "conv_net",
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        ),
        (1, 1, 8, 8),
    ),
]


@pytest.mark.parametrize(
    "layer, shape", [s[1:] for s in STANDARD_LAYERS], ids=[s[0] for s in STANDARD_LAYERS]
)
def test_macs_of_standard_layers_agree_with_thop(layer, shape):
    x = torch.randn(shape)
    ours = _profile(layer, x)
    theirs, _ = thop.profile(layer, inputs=(x,), verbose=False)
    assert abs(ours.macs - theirs) <= 0.01 * theirs
    assert ours.params == sum(p.numel() for p in layer.parameters())


def test_peak_sram_of_a_chain_is_the_largest_input_plus_output():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    x = torch.randn(1, 1, 8, 8)
    prof = _profile(model, x)
    # conv1: input 64 + output 256 floats; relu in place; conv2: 256 in + 128 out
    assert prof.peak_sram_bytes == 4 * max(64 + 256, 256, 256 + 128)
    assert [r.live_bytes for r in prof.layers] == [4 * 320, 4 * 256, 4 * 384]
    assert [r.output_bytes for r in prof.layers] == [1024, 0, 512]
    assert _profile(model, x, activation_bits=8).peak_sram_bytes == 384


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 4, 3, padding=1)
        self.b = nn.Conv1d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 10, 3)

    def forward(self, x):
        y = self.a(x)
        z = self.b(y)
        return self.head((y + z).flatten(1))


def test_peak_sram_keeps_a_skip_connection_alive():
    prof = _profile(Residual(), torch.randn(1, 2, 10))
    # at the add: y, z and y + z (40 floats each) are live
    assert prof.peak_sram_bytes == 4 * 120
    add = next(r for r in prof.layers if r.op == "add")
    assert add.live_bytes == 4 * 120 and add.module == ""
    view = next(r for r in prof.layers if r.op == "view")
    assert view.output_bytes == 0  # flatten is a view: no new memory


def test_zero_weights_reduce_nonzero_params_and_macs():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[:4] = 0  # half of the filters
    prof = _profile(conv, torch.randn(1, 4, 6, 6))
    assert prof.params == 288 and prof.nonzero_params == 144
    assert prof.macs == 8 * 36 * 36 and prof.nonzero_macs == prof.macs // 2


class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def test_parametrized_masks_count_as_zeros_and_not_as_activations():
    model = nn.Sequential(nn.Linear(10, 6, bias=False), nn.ReLU(), nn.Linear(6, 2, bias=False))
    dense = _profile(model, torch.randn(1, 10))
    mask = torch.zeros(6, 10)
    mask[:, :5] = 1
    parametrize.register_parametrization(model[0], "weight", Mask(mask))
    masked = _profile(model, torch.randn(1, 10))
    assert masked.params == dense.params == 72
    assert masked.nonzero_params == 30 + 12
    assert masked.macs == dense.macs == 72 and masked.nonzero_macs == 42
    assert masked.peak_sram_bytes == dense.peak_sram_bytes


def test_flash_counts_weights_at_weight_bits_and_biases_at_32_bits():
    layer = nn.Linear(64, 10)
    assert _profile(layer, torch.randn(1, 64)).flash_bytes == 4 * 650
    assert _profile(layer, torch.randn(1, 64), weight_bits=8).flash_bytes == 640 + 40
    assert _profile(layer, torch.randn(1, 64), weight_bits=4).flash_bytes == 320 + 40
    bn = nn.Sequential(nn.Conv1d(2, 4, 1, bias=False), nn.BatchNorm1d(4))
    # weights 8 at 8 bits; BN weight, bias, running mean and variance at 32 bits
    assert _profile(bn, torch.randn(1, 2, 5), weight_bits=8).flash_bytes == 8 + 4 * 16


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.need_weights = False

    def forward(self, x):
        return self.mha(x, x, x, need_weights=self.need_weights)[0]


@pytest.mark.parametrize("need_weights", [False, True], ids=["fused", "composite"])
def test_attention_is_counted_on_the_fused_and_the_composite_path(need_weights):
    model = Attention().eval()
    model.need_weights = need_weights
    prof = _profile(model, torch.randn(1, 5, 8))
    projections = 3 * 5 * 8 * 8 + 5 * 8 * 8
    scores_and_mix = 2 * (2 * 5 * 5 * 4)  # two heads of width 4, 5 tokens
    assert prof.macs == projections + scores_and_mix


def test_transposed_convolution_counts_each_input_against_its_kernel():
    layer = nn.ConvTranspose2d(4, 6, 2, stride=2, bias=False)
    prof = _profile(layer, torch.randn(1, 4, 3, 3))
    assert prof.macs == 4 * 9 * 6 * 4


def test_latency_is_a_positive_median_and_restores_threads():
    threads = torch.get_num_threads()
    prof = sc.measure.profile(nn.Linear(64, 10), torch.randn(1, 64), repeats=5, threads=1)
    assert prof.latency_ms is not None and prof.latency_ms > 0
    assert torch.get_num_threads() == threads
    assert _profile(nn.Linear(64, 10), torch.randn(1, 64)).latency_ms is None


def test_profile_leaves_the_model_in_its_mode_and_unchanged(digits):
    model = sc.models.create("resnet8", digits).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _profile(model, digits.example_inputs())
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_profile_to_dict_carries_every_figure(digits):
    prof = _profile(sc.models.create("mlp", digits), digits.example_inputs())
    d = prof.to_dict()
    assert set(d) == {
        "params",
        "nonzero_params",
        "macs",
        "nonzero_macs",
        "flash_bytes",
        "peak_sram_bytes",
        "latency_ms",
        "weight_bits",
        "activation_bits",
    }
    assert len(prof.to_dict(layers=True)["layers"]) == len(prof.layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_bits": 0}, "weight_bits must be >= 1"),
        ({"activation_bits": 64}, "at most 32"),
        ({"repeats": 0}, "repeats must be >= 1"),
    ],
)
def test_profile_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sc.measure.profile(nn.Linear(4, 2), torch.randn(1, 4), **kwargs)


def test_profile_needs_tensor_inputs():
    with pytest.raises(TypeError, match="example_inputs must be a tensor"):
        sc.measure.profile(nn.Linear(4, 2), [[1.0, 2.0]])
