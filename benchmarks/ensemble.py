"""N ensemble members trained as one vmapped program vs N runs one after another.

  python -m benchmarks.ensemble --members=5 --nets=seed003,seed002 --conv_impls=hybrid,matmul

Both sides are the real training path (`training.loop.train_epoch`) on the same data: one run
of N members (one program over the member axis) against N runs of one member, one after
another. Prints training images/s (counting every member's images) and
the ratio to sequential (> 1: one program wins), for both ways of running the member axis
inside the program: vmap (batched) and lax.map (one member after another; "auto" on CPU).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import app, flags

from benchmarks.timing import median_seconds
from fmnist_jax.config import TrainConfig
from fmnist_jax.runs import host_memory
from fmnist_jax.training import loop
from fmnist_jax.training import members as members_lib

FLAGS = flags.FLAGS
flags.DEFINE_integer("members", 5, "Ensemble members.")
flags.DEFINE_list("nets", ["seed003", "seed002"], "Networks.")
flags.DEFINE_list("conv_impls", ["hybrid"], "Convolution implementations to compare (hybrid: CPU's auto).")
flags.DEFINE_integer("batch", 250, "Batch size per member.")
flags.DEFINE_integer("steps", 4, "Training steps per timing.")
flags.DEFINE_integer("repeats", 3, "Timings (median reported).")


def _placed(cfg, x, y, train_idx, val_idx, members):
    setup = loop.RunSetup.place(cfg, x, y, train_idx, val_idx, members)
    return setup, setup.programs()


def measure(net: str, impl: str) -> tuple[float, float, float]:
    """(sequential, vmapped, lax.map'ed) training images/s over all members."""
    rng = np.random.default_rng(0)
    n = FLAGS.batch * FLAGS.steps
    x = rng.integers(0, 256, (n + 100, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n + 100).astype(np.int32)
    train_idx, val_idx = np.arange(n), np.arange(n, n + 100)
    cfg = TrainConfig(model=net, batch=FLAGS.batch, augment=("flip", "erase"), conv_impl=impl)
    members = members_lib.seed_members(0, FLAGS.members)
    alone = [_placed(cfg, x, y, train_idx, val_idx, [m]) for m in members]
    states = [loop.init(*run) for run in alone]

    def sequential():
        for i, run in enumerate(alone):
            states[i], _, _ = loop.train_epoch(*run, states[i], 0)
        jax.block_until_ready(states)

    def one_program(execution):
        together = _placed(dataclasses.replace(cfg, member_execution=execution), x, y, train_idx, val_idx, members)
        stacked = [loop.init(*together)]

        def run():
            stacked[0], _, _ = loop.train_epoch(*together, stacked[0], 0)
            jax.block_until_ready(stacked[0])
        return run

    images = n * FLAGS.members
    return tuple(images / median_seconds(run, FLAGS.repeats)
                 for run in (sequential, one_program("vmap"), one_program("map")))


def main(argv):
    del argv
    host_memory.keep_freed_memory()   # as the experiment scripts run
    print(f"{FLAGS.members} members, batch {FLAGS.batch}, {FLAGS.steps} steps per timing, "
          f"median of {FLAGS.repeats}; backend {jax.default_backend()}")
    print(f"{'net':<9}{'conv':<8}{'sequential img/s':>18}{'vmap img/s':>12}{'vmap/seq':>10}"
          f"{'lax.map img/s':>15}{'map/seq':>9}")
    for net in FLAGS.nets:
        for impl in FLAGS.conv_impls:
            seq, vm, mp = measure(net, impl)
            print(f"{net:<9}{impl:<8}{seq:18.0f}{vm:12.0f}{vm / seq:10.2f}{mp:15.0f}{mp / seq:9.2f}", flush=True)


if __name__ == "__main__":
    app.run(main)
