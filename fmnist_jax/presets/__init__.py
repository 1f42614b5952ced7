"""Named training configurations: one module per earlier project and per recipe.

Each module's docstring says what it reproduces, the number to compare with, and the command;
its `CONFIG` is a `TrainConfig`, its `REFERENCE` the number the results table
compares with, its `MEMBERS` (default 1) how many seeds that number averages and its `SCORED`
(default "best") which of each member's variables it is of.
`experiments.cnn --preset=NAME` starts from it, and flags given
explicitly override its fields.
"""

from __future__ import annotations

import importlib

from fmnist_jax.config import TrainConfig
from fmnist_jax.errors import ConfigError

NAMES = ("seed002", "seed003", "seed004_cnn", "seed004_resnet", "demo", "speedrun", "speedrun_muon", "speedrun_long",
         "speedrun_long_muon")

# The presets whose numbers the README's results table reproduces (`experiments.reproduce`),
# cheapest protocol first on a 2-core CPU (measured: minutes, then hours, then days). The
# speedruns go by the names of their current (Muon) rows, whose members are archived under them:
# "speedrun" and "speedrun_long" name the same configurations but their records are the SGD rows.
TABLE = ("speedrun_muon", "seed004_cnn", "seed004_resnet", "speedrun_long_muon", "seed003", "seed002")


def _module(name: str):
    """The preset's module; ConfigError("preset", ...) for an unknown name."""
    if name not in NAMES:
        raise ConfigError("preset", f"does not know {name!r}; choose from {', '.join(NAMES)}.")
    return importlib.import_module(f"{__name__}.{name}")


def get(name: str) -> TrainConfig:
    """The preset's TrainConfig; ConfigError("preset", ...) for an unknown name."""
    return _module(name).CONFIG


def reference(name: str) -> str:
    """The number the preset is compared with (the earlier project's, or a target), or ""."""
    return getattr(_module(name), "REFERENCE", "")


def scored(name: str) -> str:
    """Which variables of each member the reference number is of: "best" (the selected epoch,
    the default) or "final" (the last epoch's)."""
    return getattr(_module(name), "SCORED", "best")


def members(name: str) -> int:
    """How many seeds (members) the preset's reference number averages: its protocol's size."""
    return getattr(_module(name), "MEMBERS", 1)


def describe(name: str) -> str:
    """The first line of the preset's docstring."""
    return _module(name).__doc__.strip().splitlines()[0]
