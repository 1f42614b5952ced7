"""The CNN zoo: every model by name.

Each is a flax.linen Module called as ``model.apply(variables, x, train=..., dropout_scale=1.0)``
on uint8 or float images [N, 28, 28(, 1)] -> logits [N, 10]. `dropout_scale` multiplies every
dropout rate (it may be traced: each member of a sweep has its own). Every model has a
`conv_impl` field (see `layers.resolve_conv_impl`), set with ``create(name, conv_impl=...)``;
the parameters do not depend on it.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn

from fmnist_jax.models.inception import InceptionNet
from fmnist_jax.models.mlp import MLP
from fmnist_jax.models.resnet import ResNet, wide_resnet
from fmnist_jax.models.seed_nets import Seed002Net, Seed003SimpleCNN, Seed004FourLayerCNN
from fmnist_jax.models.speedrun import SpeedrunNet

REGISTRY: dict[str, Callable[[], nn.Module]] = {
    "seed002": Seed002Net,
    "seed003": Seed003SimpleCNN,
    "seed004_cnn": Seed004FourLayerCNN,
    # Seed 004's ResNet: three post-activation stages of two basic blocks (no table was given).
    "seed004_resnet": functools.partial(ResNet, stage_sizes=(2, 2, 2), widths=(32, 64, 128), preact=False),
    "inception": InceptionNet,
    "mlp": MLP,
    "preact_resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512)),
    "preact_resnet_small": functools.partial(ResNet, stage_sizes=(1, 1, 1), widths=(16, 32, 64)),
    "wrn16_4": functools.partial(wide_resnet, depth=16, width=4, dropout=0.3),
    "wrn28_10": functools.partial(wide_resnet, depth=28, width=10, dropout=0.3),
    # The speedrun family (models/speedrun.py) and its ablations.
    "speedrun": SpeedrunNet,
    "speedrun_small": functools.partial(SpeedrunNet, widths=(32, 64, 128)),
    "speedrun_small_relu": functools.partial(SpeedrunNet, widths=(32, 64, 128), activation="relu"),
    "speedrun_relu": functools.partial(SpeedrunNet, activation="relu"),
    "speedrun_deep": functools.partial(SpeedrunNet, depth=2),
    "speedrun_bn_scale": functools.partial(SpeedrunNet, bn_scale=True),
    "speedrun_no_whiten": functools.partial(SpeedrunNet, whiten=False),
    # Stride-2 whitening stem: 64/128/256 channels at 14 -> 7 -> 3 -> 1 for fewer MACs than speedrun_small.
    "speedrun_s2": functools.partial(SpeedrunNet, stem_stride=2, whiten_patch=4),
    "speedrun_small_bn_scale": functools.partial(SpeedrunNet, widths=(32, 64, 128), bn_scale=True),
    "speedrun_small_no_whiten": functools.partial(SpeedrunNet, widths=(32, 64, 128), whiten=False),
}


class UnknownModelError(ValueError):
    pass


def names() -> list[str]:
    return sorted(REGISTRY)


def create(name: str, **kwargs) -> nn.Module:
    """The model registered under `name`, with constructor overrides."""
    if name not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(names())}.")
    return REGISTRY[name](**kwargs)
