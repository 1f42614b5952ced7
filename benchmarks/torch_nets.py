"""PyTorch twins of the zoo nets the benchmarks time (same layers, shapes and parameter counts as
the Flax nets of fmnist_jax.models, up to where SAME padding puts its odd pixel), for images/s
and FLOP/s side by side. Only benchmarks import this (torch is in the bench extra)."""

from __future__ import annotations

from torch import nn


def seed002():
    """Seed 002's net (the zoo's `seed002`) as a torch.nn.Sequential."""
    return nn.Sequential(
        nn.BatchNorm2d(1), nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(64),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(6272, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 256), nn.ReLU(),
        nn.Dropout(0.5), nn.BatchNorm1d(256), nn.Linear(256, 10))


def seed003():
    """Seed 003's net (the zoo's `seed003`) as a torch.nn.Sequential."""
    return nn.Sequential(
        nn.BatchNorm2d(1), nn.Conv2d(1, 64, 4, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1),
        nn.Conv2d(64, 64, 4), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3), nn.Flatten(),
        nn.Linear(1600, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 64), nn.ReLU(),
        nn.BatchNorm1d(64), nn.Linear(64, 10))


def seed004_cnn():
    """Seed 004's 4-layer CNN (the zoo's `seed004_cnn`) as a torch.nn.Sequential."""
    layers, channels = [], 1
    for features in (32, 68, 128, 256):
        layers += [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(features), nn.MaxPool2d(2)]
        channels = features
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(256, 512), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))


class _Seed004Block(nn.Module):
    def __init__(self, cin: int, features: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, features, 3, stride, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(features), nn.BatchNorm2d(features)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, features, 1, stride) if stride != 1 or cin != features else nn.Identity()

    def forward(self, x):
        y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        return (self.shortcut(x) + y).relu()


def seed004_resnet():
    """Seed 004's ResNet (the zoo's `seed004_resnet`) in torch."""
    blocks, channels = [], 64
    for stage, features in enumerate((64, 128, 256, 512)):
        for block in range(2):
            blocks.append(_Seed004Block(channels, features, 2 if stage > 0 and block == 0 else 1))
            channels = features
    return nn.Sequential(nn.Conv2d(1, 64, 7, 2, padding=3), nn.BatchNorm2d(64), nn.ReLU(), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))


class _Speedrun(nn.Module):
    """The speedrun net at widths 32/64/128 (speedrun_small): a fixed 3x3 whitening layer (no
    gradient), +/-, GELU, then conv -> max-pool -> BN (shift only) -> GELU per block, global max."""

    def __init__(self, widths=(32, 64, 128)):
        super().__init__()
        self.whiten = nn.Conv2d(1, 9, 3, padding=1)
        self.whiten.requires_grad_(False)
        blocks, channels = [], 18
        for width in widths:
            bn = nn.BatchNorm2d(width, momentum=0.1)
            bn.weight.requires_grad_(False)
            blocks += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.MaxPool2d(2), bn, nn.GELU()]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, 10, bias=False)

    def forward(self, x):
        import torch
        x = self.whiten(x)
        x = nn.functional.gelu(torch.cat([x, -x], 1))
        return self.head(self.blocks(x).amax((2, 3)))


NETS = {"seed002": seed002, "seed003": seed003, "seed004_cnn": seed004_cnn, "seed004_resnet": seed004_resnet,
        "speedrun_small": _Speedrun}


def create(net: str):
    """The PyTorch twin of zoo net `net` (KeyError naming the nets that have one otherwise)."""
    if net not in NETS:
        raise KeyError(f"no PyTorch twin of {net!r}; benchmarks.torch_nets has {', '.join(NETS)}.")
    return NETS[net]()
