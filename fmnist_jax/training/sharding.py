"""Placing a run on the devices: a 2-D mesh of member groups x data shards.

The member axis of an ensemble (or sweep) is split across as many devices as divide it; devices
left over shard each member's batch (data parallelism). So 8 members on 8 GPUs put one member
on each GPU, a single large model on 8 GPUs shards its batch 8 ways, and 4 members on 8 GPUs do
both (4 x 2). On one device the mesh is 1 x 1 and nothing changes.

The arrays are created through `jax.make_array_from_callback` and jitted initialisers with
`out_shardings`, which also works when the devices belong to several processes (multi-host:
call `initialize_distributed` first; every process runs the same program on the same data).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fmnist_jax.errors import ConfigError

log = logging.getLogger(__name__)

MEMBERS = "members"
DATA = "data"


def make_mesh(n_members: int, batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The largest (member groups, data shards) mesh that divides both the members and the batch."""
    devices = list(devices if devices is not None else jax.devices())
    groups = math.gcd(n_members, len(devices))
    shards = math.gcd(batch_size, len(devices) // groups)
    used = devices[: groups * shards]
    if len({d.process_index for d in used}) < len({d.process_index for d in devices}):
        raise ConfigError("batch", f"{batch_size} and {n_members} member(s) do not divide the {len(devices)} devices "
                                   f"of the {jax.process_count()} processes, so some process would have none; "
                                   f"choose a batch divisible by {len(devices)}.")
    if len(used) < len(devices):
        log.warning("using %d of %d devices: %d members and batch %d do not divide the rest",
                    len(used), len(devices), n_members, batch_size)
    return Mesh(np.array(used, dtype=object).reshape(groups, shards), (MEMBERS, DATA))


def describe(mesh: Mesh) -> str:
    """One line for the run log, e.g. '4 cpu devices: 2 member groups x 2 data shards'."""
    n = mesh.devices.size
    platform = mesh.devices.flat[0].platform
    if n == 1:
        return f"1 {platform} device"
    return (f"{n} {platform} devices: {mesh.shape[MEMBERS]} member groups x "
            f"{mesh.shape[DATA]} data shards")


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (member) axis split across member groups, replicated across data shards."""
    return NamedSharding(mesh, P(MEMBERS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[members, steps, batch] index arrays: members across groups, the batch across data shards."""
    return NamedSharding(mesh, P(MEMBERS, None, DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds in full."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index], dtype=value.dtype)


def put_keys(keys: jax.Array, sharding: NamedSharding) -> jax.Array:
    """Typed PRNG keys [M] placed with `sharding` (through their raw uint32 data)."""
    data = np.asarray(jax.random.key_data(keys))
    return jax.random.wrap_key_data(put(data, sharding), impl=jax.random.key_impl(keys))


def to_host(tree: Any) -> Any:
    """Every array of `tree` as a numpy array in this process, also when it spans the devices of
    several processes (multi-host): a replicated array from its local copy, a sharded one
    gathered from every process (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    def one(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(jax.device_get(leaf))
        if leaf.sharding.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


def is_main_process() -> bool:
    """Whether this process writes a run's files (logs, metrics, reports): process 0 of a
    multi-host run, or the only one."""
    return jax.process_index() == 0


def is_sharded_over_members(tree: Any, mesh: Mesh) -> bool:
    """True when every array of `tree` is laid out with member_sharding on `mesh`."""
    want = member_sharding(mesh)
    return all(leaf.sharding.is_equivalent_to(want, leaf.ndim) for leaf in jax.tree.leaves(tree))


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, heartbeat_timeout_seconds: int = 100) -> None:
    """Joins a multi-host run (`jax.distributed.initialize`); on TPU pods and SLURM the
    arguments are found automatically. Afterwards jax.devices() lists every host's devices.

    CPU processes exchange collectives through gloo (set here, before any computation). When a
    process dies, the others stop after `heartbeat_timeout_seconds` instead of waiting forever.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Recoverable: a dead peer makes the next collective fail with an error this process can report
    # (experiments.cli: one sentence), instead of the coordination service aborting every process.
    jax.config.update("jax_enable_recoverability", True)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
