"""Run by test_sharding.py in a subprocess with 4 forced CPU devices (XLA_FLAGS is read when jax
is imported, so it cannot be set inside the pytest process). Prints one JSON line.

    python -m tests.sharded_run MEMBERS MODEL

trains MEMBERS members of MODEL for one epoch on all 4 devices and on one, and reports the mesh,
the shards and the gap between the two. One case per process, so a parallel test run spreads them.
"""

import dataclasses
import json
import sys

import jax
import numpy as np

from fmnist_jax.config import TrainConfig
from fmnist_jax.training import loop, sharding
from fmnist_jax.training import members as members_lib
from tests.conftest import make_dataset, placed

CFG = TrainConfig(model="mlp", epochs=1, batch=32, augment=("flip", "erase"),
                        optimizer="sgd", lr=0.01, split="random", val_fraction=0.25, split_per_seed=True)


def run(cfg, n_members: int, devices):
    ds = make_dataset(n_train=160, n_test=40)
    members = members_lib.seed_members(0, n_members)
    train_idx, val_idx = members_lib.member_splits(ds.y_train, cfg, [m.seed for m in members])
    t = placed(cfg, ds.x_train, ds.y_train, train_idx, val_idx, members, devices=devices)
    *_, (result, state) = loop.epochs(*t, loop.init(*t))
    return t, state, result


def _max_gap(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
    report = {"devices": jax.device_count(),
              "meshes": {f"{m}x{b}": dict(sharding.make_mesh(m, b).shape)
                         for m, b in ((5, 250), (8, 250), (6, 32), (3, 7))}}
    n_members, model = int(sys.argv[1]), sys.argv[2]
    cfg = dataclasses.replace(CFG, model=model)
    t, sharded, result = run(cfg, n_members, jax.devices())
    _, single, single_result = run(cfg, n_members, jax.devices()[:1])
    leaf = jax.tree.leaves(sharded.train.params)[0]
    report |= {
        "mesh": dict(t.setup.mesh.shape),
        "describe": sharding.describe(t.setup.mesh),
        "sharded_over_members": sharding.is_sharded_over_members(sharded, t.setup.mesh),
        "devices_holding_a_kernel": len(leaf.sharding.device_set),
        "shard_shape": list(leaf.addressable_shards[0].data.shape),
        "max_gap": _max_gap(sharded.train.params, single.train.params),
        "batch_stats_gap": _max_gap(sharded.train.batch_stats, single.train.batch_stats)
        if jax.tree.leaves(single.train.batch_stats) else None,
        "param_change": _max_gap(loop.init(*t).train.params, single.train.params),
        "val_gap": float(np.abs(np.array(result.val_accuracy) - np.array(single_result.val_accuracy)).max()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
