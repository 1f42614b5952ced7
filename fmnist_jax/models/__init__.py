"""The CNN zoo: one name per architecture, configured by its keyword arguments.

    model = models.create("speedrun", widths=(32, 64, 128), activation="relu")

Each is a flax.linen Module called as ``model.apply(variables, x, train=..., dropout_scale=1.0)``
on uint8 or float images [N, 28, 28(, 1)] -> logits [N, 10]. `dropout_scale` multiplies every
dropout rate (it may be traced: each member of a sweep has its own). Every model has a
`conv_impl` field (see `layers.resolve_conv_impl`); the parameters do not depend on it.

The earlier projects' nets have their own names (their parameter counts are pinned in
tests/test_models.py); the families (`resnet`, `wrn`, `speedrun`) take their shape as arguments
(`TrainConfig.model_args`), so a variant or an ablation is a configuration, not a new name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping

import flax.linen as nn

from fmnist_jax.models.inception import InceptionNet
from fmnist_jax.models.mlp import MLP
from fmnist_jax.models.resnet import ResNet, wide_resnet
from fmnist_jax.models.seed004_resnet import Seed004ResNet
from fmnist_jax.models.seed_nets import Seed002Net, Seed003SimpleCNN, Seed004CNN
from fmnist_jax.models.speedrun import SpeedrunNet

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    # The earlier projects' nets.
    "seed002": Seed002Net,
    "seed003": Seed003SimpleCNN,
    "seed004_cnn": Seed004CNN,
    "seed004_resnet": Seed004ResNet,
    "inception": InceptionNet,
    "mlp": MLP,
    # Families: their shape comes from model_args.
    "resnet": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512)),  # ResNet-18
    "wrn": functools.partial(wide_resnet, depth=16, width=4, dropout=0.3),                     # WRN-16-4
    "speedrun": SpeedrunNet,
}

# Names that models had before they were configured by arguments. Committed records and their
# commands use them, so they still resolve (`resolve`), to their family and arguments; they are
# not zoo entries (`names()` does not list them).
FORMER_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "preact_resnet18": ("resnet", {}),
    "preact_resnet_small": ("resnet", {"stage_sizes": (1, 1, 1), "widths": (16, 32, 64)}),
    "wrn16_4": ("wrn", {}),
    "wrn28_10": ("wrn", {"depth": 28, "width": 10}),
    "speedrun_small": ("speedrun", {"widths": (32, 64, 128)}),
    "speedrun_small_relu": ("speedrun", {"widths": (32, 64, 128), "activation": "relu"}),
    "speedrun_relu": ("speedrun", {"activation": "relu"}),
    "speedrun_deep": ("speedrun", {"depth": 2}),
    "speedrun_bn_scale": ("speedrun", {"bn_scale": True}),
    "speedrun_no_whiten": ("speedrun", {"whiten": False}),
    "speedrun_s2": ("speedrun", {"stem_stride": 2, "whiten_patch": 4}),
    "speedrun_small_bn_scale": ("speedrun", {"widths": (32, 64, 128), "bn_scale": True}),
    "speedrun_small_no_whiten": ("speedrun", {"widths": (32, 64, 128), "whiten": False}),
}


class UnknownModelError(ValueError):
    pass


def names() -> list[str]:
    """The zoo's names."""
    return sorted(REGISTRY)


def resolve(name: str, args: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(zoo name, arguments) of `name` with `args`: a former name becomes its family and the
    arguments it stood for, `args` over them. UnknownModelError for a name that is neither."""
    args = dict(args or {})
    if name in FORMER_NAMES:
        family, implied = FORMER_NAMES[name]
        return family, {**implied, **args}
    if name not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(names())}.")
    return name, args


def arguments(name: str) -> tuple[str, ...]:
    """The keyword arguments the zoo model `name` takes (its shape; conv_impl excluded)."""
    factory = REGISTRY[resolve(name)[0]]
    target = factory.func if isinstance(factory, functools.partial) else factory
    if dataclasses.is_dataclass(target):
        taken = [f.name for f in dataclasses.fields(target) if f.init and f.name not in ("parent", "name")]
    else:
        taken = list(inspect.signature(target).parameters)
    return tuple(a for a in taken if a != "conv_impl")


def create(name: str, /, **kwargs) -> nn.Module:
    """The zoo model `name` built with `kwargs` (its arguments, and conv_impl).

    UnknownModelError for an unknown name or an argument the model does not take.
    """
    family, kwargs = resolve(name, kwargs)
    unknown = sorted(set(kwargs) - set(arguments(family)) - {"conv_impl"})
    if unknown:
        raise UnknownModelError(f"model {family!r} takes no argument {unknown[0]!r}; it takes "
                                f"{', '.join(arguments(family)) or 'none'}.")
    return REGISTRY[family](**kwargs)
