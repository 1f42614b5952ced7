"""The member axis: a run trains M members at once, and a single run is an ensemble of one.

Members differ in their seed (init, shuffling, augmentation and dropout keys), optionally in
their train/validation split (seed 003's protocol) and in their shape-free hyper-parameters (a
sweep). `over_members` is how a per-member function runs over the axis inside one compiled
program: vmapped, or one member after another (`lax.map`), or unbatched for a single member.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from fmnist_jax.config import MEMBER_EXECUTIONS, TrainConfig
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError
from fmnist_jax.training import sharding


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of a run: its seed and the hyper-parameters it overrides (config.HPARAM_NAMES)."""
    seed: int
    hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"seed": self.seed, "hparams": dict(self.hparams)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Member":
        return cls(seed=int(d["seed"]), hparams=dict(d.get("hparams", {})))


def seed_members(first_seed: int, n: int) -> list[Member]:
    """n members with seeds first_seed, first_seed + 1, ..."""
    return [Member(first_seed + i) for i in range(n)]


def member_splits(labels: np.ndarray, cfg: TrainConfig, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx [M, n_train], val_idx [M, n_val]) into `labels`, as cfg.split says.

    cfg.split_per_seed: each member splits with its own seed; otherwise every member uses the
    split of cfg.data_seed (cfg.seed when it is -1). Split sizes do not depend on the seed, so the
    indices stack. (TrainConfig.validate refuses an ordered split per seed.)
    """
    def one(seed):
        return datasets.train_val_split(labels, cfg.val_fraction, seed, shuffle=cfg.split != "ordered",
                                        stratify=cfg.split == "stratified")
    shared = cfg.data_seed if cfg.data_seed >= 0 else cfg.seed
    splits = [one(s) for s in seeds] if cfg.split_per_seed else [one(shared)] * len(seeds)
    return np.stack([t for t, _ in splits]), np.stack([v for _, v in splits])


def resolve_member_execution(execution: str, mesh, n_members: int) -> str:
    """How a per-member function runs over the member axis inside the one compiled program.

    "vmap": all members batched together, the way to fill a GPU/TPU and the only way to shard
    members across devices. "map": `lax.map`, one member after another inside the program; on a
    CPU the members share the same cores anyway, and batching them only costs (vmapped
    convolutions over per-member kernels are grouped convolutions; `benchmarks.ensemble`
    compares both, figures in benchmarks/README.md).
    "auto": "map" for several members on a single CPU member group, "vmap" otherwise. A single
    member runs unbatched whatever the choice (see `over_members`).
    """
    if execution not in MEMBER_EXECUTIONS:
        raise ConfigError("member_execution", f"does not know {execution!r}; choose from "
                                              f"{', '.join(MEMBER_EXECUTIONS)}.")
    if execution != "auto":
        return execution
    single_group = mesh.shape[sharding.MEMBERS] == 1
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    return "map" if n_members > 1 and single_group and on_cpu else "vmap"


def execution_label(execution: str, n_members: int) -> str:
    """How the members run, as logs and summaries name it (one member runs unbatched)."""
    return execution if n_members > 1 else "unbatched (one member)"


def over_members(fn: Callable, in_axes: tuple, execution: str) -> Callable:
    """`fn` applied to every member: vmapped, or lax.map'ed (arguments with axis None are shared).

    A member axis of length 1 is squeezed away instead, whatever the execution, so a single run
    traces `fn` unbatched: vmap would turn every convolution into a grouped convolution over
    per-member kernels (XLA CPU's slow path), and lax.map would wrap the step in a loop.
    """
    def member_args(args, pick):
        return [jax.tree.map(pick, a) if axis == 0 else a for a, axis in zip(args, in_axes)]

    def mapped(*args):
        per_member = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

        def one(member):
            it = iter(member)
            return fn(*[next(it) if axis == 0 else a for a, axis in zip(args, in_axes)])

        return jax.lax.map(one, per_member)

    def run(*args):
        sizes = {leaf.shape[0] for a, axis in zip(args, in_axes) if axis == 0 for leaf in jax.tree.leaves(a)}
        if sizes == {1}:
            return jax.tree.map(lambda a: a[None], fn(*member_args(args, lambda a: a[0])))
        if execution == "vmap":
            return jax.vmap(fn, in_axes=in_axes)(*args)
        return mapped(*args)

    return run


def stack(trees: Sequence[Any]) -> Any:
    """Host pytrees stacked leaf by leaf along a new leading member axis."""
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)
