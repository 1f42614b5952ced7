"""Would a block-level compaction pay in the L1 cascade? How few blocks hold its survivors.

  python -m benchmarks.knn_block_order                 # 253 test queries, blocks of 64, k=5

The L1 cascade (`knn.kernels.l1_chunk`) keeps every training point whose 4x4-pooled bound is
within the query's threshold, and compacts them block by block: the fewer blocks of consecutive
training points hold a query's survivors, the fewer columns the running count reads. `exact.search`
stores the training set in the bisection order for that reason. This prints, for three orders of the training set (as
stored, random, and recursive PCA bisection of the 4x4 pooled sums into blocks), how many blocks
hold a survivor, and how many blocks each block's pooled bounding box cannot rule out. The
threshold is the true k-th L1 distance (`exact.search`), the tightest any search could know.
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from fmnist_jax.data import datasets
from fmnist_jax.knn import exact, kernels, ordering

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The script's flags, defined only when it runs (other benchmarks that tests import define
    flags of the same names on absl's global registry)."""
    flags.DEFINE_integer("queries", 253, "Test images to probe (one chunk of the search).")
    flags.DEFINE_integer("block", 64, "Training points a block.")
    flags.DEFINE_integer("k", 5, "Neighbours per query.")
    flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files (default: the usual places).")


def main(argv):
    del argv
    x_train, _, x_test, _ = datasets.load(data_dir=FLAGS.data_dir)
    q = jnp.asarray(x_test[:FLAGS.queries])
    pooled = np.asarray(kernels.pool_sums(jnp.asarray(x_train), 4))            # [n, 49]
    started = time.perf_counter()
    bisection = ordering.bisection_order(pooled.astype(np.float64), FLAGS.block)
    print(f"PCA-bisection order of {len(pooled):,} points built in {time.perf_counter() - started:.1f} s")
    q_pooled = np.asarray(kernels.pool_sums(q, 4))
    bound = np.asarray(kernels.l1_to_columns(q_pooled, pooled.T))             # [q, n]: the cascade's bound
    threshold = exact.search(x_train, x_test[:FLAGS.queries], FLAGS.k, "l1").distances[:, FLAGS.k - 1]
    survivors = bound <= threshold[:, None]
    counts = survivors.sum(1)
    print(f"survivors of the 4x4 bound a query: median {np.median(counts):.0f}, 90th percentile "
          f"{np.percentile(counts, 90):.0f}")
    n, b = len(pooled), FLAGS.block
    blocks = -(-n // b)
    print(f"{'order':<12}{'blocks with a survivor: median':>32}{'p90':>6}{'max':>6}{'box bound keeps: median':>26}"
          f"{'p90':>6}   (of {blocks})")
    for name, order in (("as stored", np.arange(n)), ("random", np.random.default_rng(1).permutation(n)),
                        ("bisection", bisection)):
        pad = blocks * b - n
        held = np.pad(survivors[:, order], ((0, 0), (0, pad))).reshape(len(q), blocks, b).any(2).sum(1)
        boxes = np.pad(pooled[order], ((0, pad), (0, 0)), mode="edge").reshape(blocks, b, -1)
        lo, hi = boxes.min(1), boxes.max(1)
        gap = np.maximum(np.maximum(lo[None] - q_pooled[:, None], q_pooled[:, None] - hi[None]), 0).sum(-1)
        kept = (gap <= threshold[:, None]).sum(1)
        print(f"{name:<12}{np.median(held):>32.0f}{np.percentile(held, 90):>6.0f}{held.max():>6}"
              f"{np.median(kept):>26.0f}{np.percentile(kept, 90):>6.0f}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
