"""Small models that exercise every coupling the dependency graph must handle."""

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.models.layers import ChannelShuffle


def cbr(cin, cout, k=3, groups=1, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class Head(nn.Module):
    def __init__(self, cin, classes=5):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class CascadedCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 8), cbr(8, 6), cbr(14, 10)
        self.d = cbr(24, 12)
        self.head = Head(12)

    def forward(self, x):
        a = self.a(x)
        b = self.b(a)
        ab = torch.cat([a, b], 1)
        c = self.c(ab)
        return self.head(self.d(torch.cat([ab, c], 1)))


class SplitCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.left, self.right = cbr(8, 8), cbr(8, 12)
        self.head = Head(20)

    def forward(self, x):
        y = self.stem(x)
        a, b = torch.split(y, 8, dim=1)
        return self.head(torch.cat([self.left(a), self.right(b)], 1))


class ResidualChain(nn.Module):
    def __init__(self, blocks=3):
        super().__init__()
        self.stem = cbr(3, 12)
        self.blocks = nn.ModuleList(
            nn.Sequential(cbr(12, 20), nn.Conv2d(20, 12, 1), nn.BatchNorm2d(12))
            for _ in range(blocks)
        )
        self.head = Head(12)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.head(x)


class ShuffleBlock(nn.Module):
    """Grouped 1x1, channel shuffle by view-transpose-view, depthwise, grouped 1x1."""

    def __init__(self, groups=2):
        super().__init__()
        self.stem = cbr(3, 16)
        self.g1 = cbr(16, 24, 1, groups=groups)
        self.shuffle = ChannelShuffle(groups)
        self.dw = cbr(24, 24, 3, groups=24)
        self.g2 = nn.Sequential(nn.Conv2d(24, 16, 1, groups=groups), nn.BatchNorm2d(16))
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.g2(self.dw(self.shuffle(self.g1(x))))))


class GroupedStack(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.stem = cbr(3, 16)
        self.g1 = cbr(16, 24, 3, groups=groups)
        self.g2 = cbr(24, 32, 1, groups=groups)
        self.head = Head(32)

    def forward(self, x):
        return self.head(self.g2(self.g1(self.stem(x))))


class DepthwiseStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.dw1 = cbr(8, 8, 3, groups=8)
        self.dw2 = cbr(8, 16, 3, groups=8)  # depth multiplier 2
        self.pw = cbr(16, 12, 1)
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.pw(self.dw2(self.dw1(self.stem(x)))))


class SEBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.reduce = nn.Conv2d(16, 4, 1)
        self.expand = nn.Conv2d(4, 16, 1)
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(x * gate)


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(cbr(3, 8), nn.MaxPool2d(2), cbr(8, 12), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(12 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(self.features(x), 1))))


class MultiInputOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = cbr(3, 8)
        self.signal = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU())
        self.mix = nn.Linear(16, 24)
        self.out_a, self.out_b = nn.Linear(24, 5), nn.Linear(24, 3)

    def forward(self, image, signal):
        h = torch.cat([self.image(image).mean((2, 3)), self.signal(signal).mean(2)], 1)
        h = F.relu(self.mix(h))
        return self.out_a(h), self.out_b(h)


class Scale(nn.Module):
    """A custom leaf layer: a learnable per-channel scale and shift."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))
        self.shift = nn.Parameter(torch.linspace(-0.1, 0.1, channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class CustomLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.scale = Scale(12)
        self.act = nn.PReLU(12)
        self.conv2 = nn.Conv2d(12, 8, 3, padding=1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.conv2(self.act(self.scale(self.conv(x)))))


class PixelShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.up = nn.PixelShuffle(2)  # 16 channels -> 4 channels at twice the resolution
        self.conv = cbr(4, 8)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.conv(self.up(self.stem(x))))


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.mlp(h)
        return self.head(h.mean(1))


class TransposedConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = cbr(3, 12, stride=2)
        self.up = nn.ConvTranspose2d(12, 10, 2, stride=2)
        self.conv = cbr(10, 8)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.conv(self.up(self.down(x))))


IMAGE = (2, 3, 8, 8)
SYNTHETIC = {
    "cascaded_cat": (CascadedCat, IMAGE),
    "split_cat": (SplitCat, IMAGE),
    "residual_chain": (ResidualChain, IMAGE),
    "channel_shuffle_g2": (lambda: ShuffleBlock(2), IMAGE),
    "channel_shuffle_g4": (lambda: ShuffleBlock(4), IMAGE),
    "grouped_g2": (lambda: GroupedStack(2), IMAGE),
    "grouped_g4": (lambda: GroupedStack(4), IMAGE),
    "depthwise_stack": (DepthwiseStack, IMAGE),
    "squeeze_excite": (SEBlock, IMAGE),
    "flatten_linear": (FlattenLinear, IMAGE),
    "custom_leaf": (CustomLeaf, IMAGE),
    "pixel_shuffle": (PixelShuffleNet, IMAGE),
    "attention": (AttentionNet, (2, 7, 6)),
    "transposed_conv": (TransposedConvNet, IMAGE),
}
