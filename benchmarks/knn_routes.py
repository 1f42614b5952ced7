"""Routes to a faster exact L2 k-NN on XLA CPU, each timed: what bounds `exact.search` today.

  python -m benchmarks.knn_routes                  # all three parts, quick (a 256-query chunk)
  python -m benchmarks.knn_routes --parts=bound    # only the pruning statistics

The L2 search is one float32 matmul of the squared-distance expansion per query chunk, then a
top-k. It can only beat a BLAS brute force (faiss `IndexFlatL2`) by doing the matmul faster or by
doing less of it. This prints, per part, the figures that decide each route:

* `gemm`: GFLOP/s of the distance matmul at the chunk sizes the search uses, against the square
  2048 x 2048 matmul, and what the search's chunk program (`kernels.l2_chunk`: matmul, top-k,
  exact re-rank) costs on top of the matmul alone. Run it under different XLA_FLAGS to compare
  XLA CPU's matmul back-ends (e.g. `--xla_cpu_use_onednn=true`, `--xla_cpu_experimental_xnn_fusion_type=dot`).
* `bound`: a pruning route. With an orthonormal basis B of d principal axes, the squared
  distance of the embeddings [B^T c, ||c - B B^T c||] (c = x - mean) is a lower bound of the
  squared distance (Pythagoras and the reverse triangle inequality), for a (d+1)-wide matmul. It
  prints, for --queries test images, how many of the 60,000 training points such a bound cannot
  rule out (bound <= the 5th-nearest distance), the fraction of queries within a fixed capacity,
  and the same against the threshold a search could know (the 5th exact distance among the best
  --seeds points by the bound).
* `select`: the per-query primitives a pruned search needs after the bound matmul, timed on a
  [--chunk, 60000] array and scaled to 10,000 queries: the bound matmul itself, top-k of 32 and
  512 (fused with the matmul), compacting the survivors of a mask (cumsum + searchsorted, as the
  L1 cascade does), gathering 512 training rows per query, and their exact distances.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import roofline
from benchmarks.timing import median_seconds
from fmnist_jax.data import datasets
from fmnist_jax.knn import kernels

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["gemm", "bound", "select"], "Which parts to run.")
flags.DEFINE_integer("chunk", 256, "Queries per timed chunk (gemm and select parts).")
flags.DEFINE_list("dims", ["63", "127"], "Embedding widths d for the bound part.")
flags.DEFINE_integer("queries", 1000, "Test images for the bound part's statistics.")
flags.DEFINE_integer("seeds", 32, "Best points by the bound whose exact distances give the threshold.")
flags.DEFINE_integer("k", 5, "Neighbours.")
flags.DEFINE_integer("repeats", 3, "Timings per figure (medians).")
flags.DEFINE_string("data_dir", None, "IDX folder.")

_CAPACITIES = (256, 512, 1024)


def _per_10k(fn, n_queries: int) -> float:
    return median_seconds(lambda: jax.block_until_ready(fn()), FLAGS.repeats) * 10_000 / n_queries


def _principal_axes(x_train: np.ndarray, dim: int):
    sample = x_train[::6].astype(np.float64)
    mean = sample.mean(0)
    _, vectors = np.linalg.eigh((sample - mean).T @ (sample - mean))
    return mean, vectors[:, ::-1][:, :dim]


def _embed(x: np.ndarray, mean, basis) -> np.ndarray:
    c = x.astype(np.float64) - mean
    p = c @ basis
    return np.concatenate([p, np.linalg.norm(c - p @ basis.T, axis=1, keepdims=True)], axis=1)


def _squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T


def gemm(r: jnp.ndarray, x_test: np.ndarray) -> None:
    print(f"square 2048 x 2048 matmul: {roofline.matmul_peak_gflops(repeats=FLAGS.repeats):.0f} GFLOP/s")
    r_t = r.astype(jnp.float32).T
    r_sq = (r_t * r_t).sum(0)
    matmul = jax.jit(lambda q: r_sq[None] - 2.0 * (q.astype(jnp.float32) @ r_t))
    for n in sorted({256, 1024, FLAGS.chunk}):
        q = jnp.asarray(x_test[:n])
        seconds = _per_10k(lambda: matmul(q), n)
        flops = 2 * 10_000 * r.shape[0] * r.shape[1] / 1e9
        print(f"distance matmul, {n} queries a chunk: {flops / seconds:.0f} GFLOP/s, {seconds:.2f} s per 10,000")
    q = jnp.asarray(x_test[:FLAGS.chunk])
    chunk = _per_10k(lambda: kernels.l2_chunk(q, r, r_t, r_sq, k=FLAGS.k, n_candidates=FLAGS.k + 8), FLAGS.chunk)
    print(f"kernels.l2_chunk (matmul + top-k + exact re-rank), {FLAGS.chunk} queries: {chunk:.2f} s per 10,000")


def bound(x_train: np.ndarray, x_test: np.ndarray) -> None:
    queries = x_test[:FLAGS.queries].astype(np.float64)
    true = _squared(queries, x_train.astype(np.float64))
    kth = np.sort(true, axis=1)[:, FLAGS.k - 1]
    for dim in (int(d) for d in FLAGS.dims):
        mean, basis = _principal_axes(x_train, dim)
        lb = _squared(_embed(queries, mean, basis), _embed(x_train, mean, basis))
        assert (lb <= true * (1 + 1e-9) + 1e-6).all(), "the embedding bound exceeded a true distance"
        best = np.argsort(lb, axis=1)[:, :FLAGS.seeds]
        known = np.sort(np.take_along_axis(true, best, 1), axis=1)[:, FLAGS.k - 1]
        for name, threshold in (("true 5th distance", kth), (f"5th among best {FLAGS.seeds}", known)):
            count = (lb <= threshold[:, None]).sum(1)
            within = ", ".join(f"<= {c}: {np.mean(count <= c):.1%}" for c in _CAPACITIES)
            print(f"d={dim:4d} threshold {name:20s}: survivors median {np.median(count):6.0f}, "
                  f"p95 {np.percentile(count, 95):6.0f}, max {count.max():6d}; {within}")


def select(r: jnp.ndarray, x_test: np.ndarray) -> None:
    n = FLAGS.chunk
    q = jnp.asarray(x_test[:n])
    u = jnp.asarray(np.random.default_rng(0).standard_normal((r.shape[0], 128)), jnp.float32)
    uq = u[:n]
    bound_matrix = jax.jit(lambda uq: (u * u).sum(1)[None] - 2.0 * (uq @ u.T))
    lb = jax.block_until_ready(bound_matrix(uq))
    top32 = jax.jit(lambda uq: jax.lax.top_k(-bound_matrix(uq), 32))
    top512 = jax.jit(lambda uq: jax.lax.top_k(-bound_matrix(uq), 512))
    rows = {
        "128-wide bound matmul [chunk, 60000]": lambda: bound_matrix(uq),
        "bound matmul + top-k 32": lambda: top32(uq),
        "bound matmul + top-k 512": lambda: top512(uq),
    }
    threshold = jnp.sort(lb, axis=1)[:, 300]  # about 300 survivors a query
    compact = jax.jit(lambda lb, t: kernels._compact(lb <= t[:, None], 512))
    rows["compact survivors, capacity 512 (cumsum + searchsorted)"] = lambda: compact(lb, threshold)
    idx = jax.block_until_ready(jax.jit(lambda lb: jax.lax.top_k(-lb, 512)[1])(lb))
    gather = jax.jit(lambda i: jax.lax.optimization_barrier(r[i]))
    rows["gather 512 training rows (uint8)"] = lambda: gather(idx)
    gathered = jax.block_until_ready(gather(idx))
    direct = jax.jit(lambda g: ((q[:, None, :].astype(jnp.float32) - g.astype(jnp.float32)) ** 2).sum(-1))
    rows["their squared distances (float32)"] = lambda: direct(gathered)
    for name, fn in rows.items():
        print(f"{name:58s} {_per_10k(fn, n):6.2f} s per 10,000 queries")


def main(argv):
    del argv
    parts = {"gemm": lambda: gemm(r, x_test), "bound": lambda: bound(x_train, x_test),
             "select": lambda: select(r, x_test)}
    unknown = sorted(set(FLAGS.parts) - set(parts))
    if unknown:
        raise app.UsageError(f"unknown --parts {', '.join(unknown)}; choose from {', '.join(parts)}.")
    ds = datasets.load(data_dir=FLAGS.data_dir)
    x_train = ds.x_train.reshape(len(ds.x_train), -1)
    x_test = ds.x_test.reshape(len(ds.x_test), -1)
    r = jnp.asarray(x_train)
    started = time.perf_counter()
    for part in FLAGS.parts:
        print(f"== {part}")
        parts[part]()
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    app.run(main)
