"""N ensemble members trained as one vmapped program vs N runs one after another.

  python -m benchmarks.ensemble --members=5 --nets=seed003,seed002 --conv_impls=matmul,xla

Both sides run the same jitted scan of training steps (train.make_run_steps) on the same batches;
the vmapped side maps it over the member axis of the state and the loop key. Prints training
images/s (counting every member's images) and the ratio vmapped / sequential (> 1: vmapping wins).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.timing import median_seconds
from fmnist_jax import models, train
from fmnist_jax.models import layers

FLAGS = flags.FLAGS
flags.DEFINE_integer("members", 5, "Ensemble members.")
flags.DEFINE_list("nets", ["seed003", "seed002"], "Networks.")
flags.DEFINE_list("conv_impls", ["matmul"], "Convolution implementations to compare.")
flags.DEFINE_integer("batch", 250, "Batch size per member.")
flags.DEFINE_integer("steps", 4, "Training steps per timing.")
flags.DEFINE_integer("repeats", 3, "Timings (median reported).")


def measure(net: str, impl: str) -> tuple[float, float]:
    """(sequential, vmapped) training images/s over all members."""
    rng = np.random.default_rng(0)
    n = FLAGS.batch * FLAGS.steps
    x = jnp.asarray(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    idx = jnp.arange(n).reshape(FLAGS.steps, FLAGS.batch)
    with layers.conv_impl(impl):
        cfg = train.TrainConfig(model=net, batch_size=FLAGS.batch, augment=("flip", "erase"))
        model = models.create(net)
        tx = train.make_optimizer(cfg, FLAGS.steps)
        run_steps = train.make_run_steps(train.make_train_step(model, tx, train.build_augment(cfg)))
        keys = jax.random.split(jax.random.key(0), FLAGS.members)
        loop_keys = jax.random.split(jax.random.key(1), FLAGS.members)
        single = jax.jit(run_steps)
        states = [train.init_state(model, tx, k) for k in keys]

        def sequential():
            for i in range(FLAGS.members):
                states[i], _ = single(states[i], x, y, idx, loop_keys[i])
            jax.block_until_ready(states)

        vmapped = jax.jit(jax.vmap(run_steps, in_axes=(0, None, None, None, 0)))
        stacked = [jax.vmap(lambda k: train.init_state(model, tx, k))(keys)]

        def together():
            stacked[0], _ = vmapped(stacked[0], x, y, idx, loop_keys)
            jax.block_until_ready(stacked[0])

        images = n * FLAGS.members
        return images / median_seconds(sequential, FLAGS.repeats), images / median_seconds(together, FLAGS.repeats)


def main(argv):
    del argv
    print(f"{FLAGS.members} members, batch {FLAGS.batch}, {FLAGS.steps} steps per timing, "
          f"median of {FLAGS.repeats}; backend {jax.default_backend()}")
    print(f"{'net':<9}{'conv':<8}{'sequential img/s':>18}{'vmapped img/s':>15}{'vmapped/seq':>13}")
    for net in FLAGS.nets:
        for impl in FLAGS.conv_impls:
            seq, vm = measure(net, impl)
            print(f"{net:<9}{impl:<8}{seq:18.0f}{vm:15.0f}{vm / seq:13.2f}", flush=True)


if __name__ == "__main__":
    app.run(main)
