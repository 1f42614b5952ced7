"""Run by test_sharding.py in a subprocess with 4 forced CPU devices (XLA_FLAGS is read when jax
is imported, so it cannot be set inside the pytest process). Prints one JSON line."""

import json
import sys

import jax
import numpy as np

from fmnist_jax import sharding, train, trainer
from tests.conftest import make_dataset

CFG = train.TrainConfig(model="seed003", epochs=1, batch=32, augment=("flip", "erase"),
                        optimizer="sgd", lr=0.01, split="random", val_fraction=0.25, split_per_seed=True)


def run(n_members: int, devices):
    ds = make_dataset(n_train=160, n_test=40)
    members = trainer.seed_members(0, n_members)
    train_idx, val_idx = trainer.member_splits(ds.y_train, CFG, [m.seed for m in members])
    t = trainer.Trainer(CFG, ds.x_train, ds.y_train, train_idx, val_idx, members, devices=devices)
    *_, (result, state) = t.epochs(t.init())
    return t, state, result


def _max_gap(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
    report = {"devices": jax.device_count(),
              "meshes": {f"{m}x{b}": dict(sharding.make_mesh(m, b).shape)
                         for m, b in ((5, 250), (8, 250), (6, 32), (3, 7))}}
    for n_members in map(int, sys.argv[1:]):
        t, sharded, result = run(n_members, jax.devices())
        _, single, single_result = run(n_members, jax.devices()[:1])
        gap = _max_gap(sharded.train.params, single.train.params)
        change = _max_gap(t.init().train.params, single.train.params)
        leaf = jax.tree.leaves(sharded.train.params)[0]
        report[n_members] = {
            "mesh": dict(t.mesh.shape),
            "describe": sharding.describe(t.mesh),
            "sharded_over_members": sharding.is_sharded_over_members(sharded, t.mesh),
            "devices_holding_a_kernel": len(leaf.sharding.device_set),
            "shard_shape": list(leaf.addressable_shards[0].data.shape),
            "max_gap": gap, "param_change": change,
            "val_gap": float(np.abs(np.array(result.val_accuracy) - np.array(single_result.val_accuracy)).max()),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
