"""Exact k-nearest-neighbour classification in JAX (L1 and L2), chunked to a memory budget.

The search returns, for every query, the k training indices with the smallest distance, ties
broken by the smaller training index. Results are exact, not approximate:

* L2 ranks candidates with the matmul expansion ||r||^2 - 2 q.r in float32, re-ranks the best
  candidates with directly computed squared differences (int32 for integer data, so uint8 pixels
  are exact), and certifies each query with a float32 error bound; a query the bound cannot
  certify is recomputed by brute force.
* L1 has no matmul form. Sums over p x p pixel blocks give lower bounds,
  ||pool(a) - pool(b)||_1 <= ||a - b||_1, so a cascade prunes: a 4x4-pooled bound over all
  training points, a threshold from the exact distances of its best few candidates, a 2x2-pooled
  bound on the survivors, exact distances on what is left. Every point whose bound exceeds the
  threshold is provably not a neighbour. The capacities are static shapes, so each chunk's
  queries are ranked by their survivors and take tiers of capacities, the fewest survivors the
  smallest; a query that overflows its tier takes a pass with wider ones, and brute force after
  the widest. The training points are stored
  in PCA-bisection order of their 4x4 sums (`ordering`), so each query's survivors sit in a few
  blocks of 64 points and the passes find them block by block; indices come back in the
  original numbering, so the order changes no result.

Votes follow scikit-learn's KNeighborsClassifier: uniform votes or 1/distance weights (a row
with zero distances gives weight 1 to those and 0 to the rest); a tie goes to the smallest label.
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from fmnist_jax.knn import kernels, ordering

log = logging.getLogger(__name__)

METRICS = kernels.METRICS
WEIGHTS = ("uniform", "distance")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of device memory the largest chunk may use

# Capacities of the L1 cascade (kernels.L1Tier: share of a chunk's queries, 4x4 and 2x2 survivors
# kept, blocks of 64 ordered training points compacted through); overflowing queries are redone.
# Every step after the bound costs in proportion to its capacities, whatever the survivors, and a
# query's survivors vary 100-fold: so the first pass ranks each chunk's queries by their survivors
# and gives each share its own capacities. On Fashion-MNIST (k=5) this certifies 95.6% of the
# queries in 146 ms a chunk of 253, where one tier of 2048/512 certified 87.5% in 184 ms
# (benchmarks/README.md, "k-NN L1 tiers").
_L1_TIERS = (kernels.L1Tier(0.40, 512, 128, 32), kernels.L1Tier(0.28, 1024, 256, 64),
             kernels.L1Tier(0.17, 2048, 512, 128), kernels.L1Tier(0.10, 4096, 1024, 256),
             kernels.L1Tier(0.05, 8192, 2048, 512))
# The wider passes, in order, for the queries the passes before could not certify: (tiers, queries
# a chunk at most); what the last cannot certify takes brute force.
_L1_WIDE_PASSES = (((kernels.L1Tier(1.0, 8192, 2048, 512),), 32), ((kernels.L1Tier(1.0, 16384, 4096),), 8))
_BRUTE_CHUNK = 32
_L2_CANDIDATE_MARGIN = 8


class Neighbors(NamedTuple):
    """Distances ([n_query, k], L1 or Euclidean) and training indices, nearest first."""
    distances: np.ndarray
    indices: np.ndarray


def chunk_size(n_ref: int, dim: int, memory_budget: int, metric: str,
               l1_tiers: Sequence[kernels.L1Tier] | None = None) -> int:
    """Queries per chunk so the chunk's largest intermediates fit the memory budget.

    l1_tiers: the L1 pass's tiers of capacities; the first pass's by default.
    """
    per_query = 4 * n_ref * 4  # a few [q, n_ref] float32/int32 rows
    if metric == "l1":
        tiers = l1_tiers or _L1_TIERS
        total = sum(t.share for t in tiers)
        per_query += int(sum(4 * t.share / total * (t.cap1 * (dim // 4 + 8) + t.cap2 * dim) for t in tiers))
    else:
        per_query += 4 * (_L2_CANDIDATE_MARGIN + 64) * dim
    return int(max(1, min(1024, memory_budget // per_query)))


def search(x_train, x_query, k: int, metric: str = "l2", *,
           memory_budget: int = DEFAULT_MEMORY_BUDGET, method: str = "auto",
           progress: Callable[[int, int], None] | None = None) -> Neighbors:
    """Exact k nearest training points of every query.

    Args:
      x_train: [n, ...] training points (uint8 images are exact; floats use float32).
      x_query: [m, ...] queries with the same trailing shape.
      k: neighbours per query, 1 <= k <= n.
      metric: "l1" or "l2" (distances returned are L1 and Euclidean).
      memory_budget: bytes the largest per-chunk intermediate may take.
      method: "auto" (pruned/expanded exact search) or "brute" (all distances, for reference).
      progress: called as progress(done_queries, total_queries) after each chunk.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    n_train = int(np.shape(x_train)[0])
    if not 1 <= k <= n_train:
        raise ValueError(f"k must be between 1 and the training-set size {n_train}, got {k}.")
    if np.shape(x_train)[1:] != np.shape(x_query)[1:]:
        raise ValueError(f"training points {np.shape(x_train)[1:]} and queries "
                         f"{np.shape(x_query)[1:]} differ in shape.")
    r = jnp.asarray(x_train)
    dim = int(np.prod(r.shape[1:]))
    n_query = int(np.shape(x_query)[0])
    size = chunk_size(n_train, dim, memory_budget, metric)
    run_chunk, wide_passes = _make_chunk_fn(r, k, metric, method)
    dists, idxs, redo = [], [], []
    for start in range(0, n_query, size):
        q = jnp.asarray(x_query[start:start + size])
        valid = q.shape[0]
        if valid < size and n_query > size:  # pad the last chunk: one compilation for all chunks
            q = jnp.concatenate([q, jnp.repeat(q[-1:], size - valid, axis=0)])
        d, i, certified = run_chunk(q)
        dists.append(np.array(d[:valid]))
        idxs.append(np.array(i[:valid]))
        redo.append(start + np.flatnonzero(~np.asarray(certified[:valid])))
        if progress is not None:
            progress(min(start + size, n_query), n_query)
    dist = np.concatenate(dists) if dists else np.zeros((0, k))
    idx = np.concatenate(idxs) if idxs else np.zeros((0, k), np.int32)
    redo = np.concatenate(redo) if redo else np.zeros(0, np.int64)
    for run_wide, wide_chunk, tiers in wide_passes:
        if not redo.size:
            break
        log.info("knn %s: %d of %d queries took a wider pruning pass", metric, redo.size, n_query)
        still = []
        wide_chunk = min(wide_chunk, chunk_size(n_train, dim, memory_budget, metric, tiers))
        for rows, queries in _fixed_size_chunks(x_query, redo, wide_chunk):
            d, i, certified = run_wide(queries)
            ok = np.asarray(certified)[:rows.size]
            dist[rows[ok]], idx[rows[ok]] = np.asarray(d)[:rows.size][ok], np.asarray(i)[:rows.size][ok]
            still.append(rows[~ok])
        redo = np.concatenate(still)
    if redo.size:
        # Queries the pruning could not certify: all distances.
        log.info("knn %s: %d of %d queries take the brute-force path", metric, redo.size, n_query)
        for rows, queries in _fixed_size_chunks(x_query, redo, _BRUTE_CHUNK):
            bd, bi = kernels.brute_chunk(queries, r, k=k, metric=metric)
            dist[rows], idx[rows] = np.asarray(bd)[:rows.size], np.asarray(bi)[:rows.size]
    dist = dist.astype(np.float64)
    if metric == "l2":
        dist = np.sqrt(dist)
    return Neighbors(dist, idx.astype(np.int64))


def _fixed_size_chunks(x_query, rows, size: int):
    """(rows, queries) chunks of the given query rows, the last padded by repetition to `size`,
    so every chunk runs the same compiled program."""
    x_query = np.asarray(x_query)
    for start in range(0, rows.size, size):
        part = rows[start:start + size]
        padded = np.concatenate([part, np.repeat(part[-1:], size - part.size)])
        yield part, jnp.asarray(x_query[padded])


def _make_chunk_fn(r, k: int, metric: str, method: str):
    """(first_pass, [(wider_pass, queries a chunk at most, its tiers), ...]): functions
    chunk -> (squared-or-L1 distances, indices, certified).

    The wider passes (L1 only) re-run the pruning with larger capacities, in order, for the
    queries the passes before could not certify.
    """
    if method == "brute":
        def brute(q):
            d, i = kernels.brute_chunk(q, r, k=k, metric=metric)
            return d, i, jnp.ones(q.shape[0], bool)
        return brute, []
    if method != "auto":
        raise ValueError(f"unknown method {method!r}; choose 'auto' or 'brute'.")
    if metric == "l2":
        r_flat = kernels.flatten(r)
        r_t = r_flat.astype(jnp.float32).T
        r_sq = (r_t * r_t).sum(0)
        n_cand = min(k + _L2_CANDIDATE_MARGIN, r_flat.shape[0] - 1)
        if n_cand < k:  # tiny training sets: brute force is exact and cheap
            return _make_chunk_fn(r, k, metric, "brute")
        return lambda q: kernels.l2_chunk(kernels.flatten(q), r_flat, r_t, r_sq, k=k, n_candidates=n_cand), []
    r_img = kernels.as_images(r)
    pool4 = kernels.pool_sums(r_img, 4)
    # Stored in PCA-bisection order of the 4x4 sums, a query's survivors sit in few blocks, which
    # the first pass compacts alone; the kernels return original indices.
    order = ordering.bisection_order(np.asarray(pool4), kernels.COUNT_BLOCK)
    original_index = jnp.asarray(order, jnp.int32)
    r_img = r_img[original_index]
    pool4_t, pool2 = pool4[original_index].T, kernels.pool_sums(r_img, 2)
    if r_img.dtype == jnp.uint8:
        # 8-bit pixels: gather 8-bit rows, and 2x2 sums (0..1020) as 8-bit codes floor(sum / 4).
        r_exact = r_img.reshape(r_img.shape[0], -1)
        codes2, step = (pool2 // 4).astype(jnp.uint8), 4
    else:
        r_exact = r_img.reshape(r_img.shape[0], -1).astype(jnp.float32)
        codes2, step = pool2, 0

    def with_tiers(tiers):
        return lambda q: kernels.l1_chunk(kernels.as_images(q), r_exact, pool4_t, codes2, k=k, code_step=step,
                                          tiers=tiers, original_index=original_index)

    return with_tiers(_L1_TIERS), [(with_tiers(tiers), chunk, tiers) for tiers, chunk in _L1_WIDE_PASSES]


def vote(neighbor_labels, neighbor_distances, k: int, weights: str = "uniform",
         num_classes: int = 10) -> np.ndarray:
    """Class predictions from the first k neighbours, as scikit-learn's KNeighborsClassifier."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}.")
    labels = np.asarray(neighbor_labels)[:, :k]
    if weights == "uniform":
        w = np.ones(labels.shape)
    else:
        dist = np.asarray(neighbor_distances, np.float64)[:, :k]
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        zero_rows = np.isinf(w).any(axis=1)
        w[zero_rows] = np.isinf(w[zero_rows])
    scores = np.zeros((labels.shape[0], num_classes))
    np.add.at(scores, (np.arange(labels.shape[0])[:, None], labels), w)
    return scores.argmax(axis=1)  # first maximum: the smallest label wins a tie


def predict(x_train, y_train, x_query, k: int = 5, metric: str = "l2", weights: str = "uniform",
            **search_kwargs) -> np.ndarray:
    """k-NN class predictions for x_query."""
    nb = search(x_train, x_query, k, metric, **search_kwargs)
    return vote(np.asarray(y_train)[nb.indices], nb.distances, k, weights)


def sweep(x_train, y_train, x_query, y_query, ks: Sequence[int], metric: str = "l2",
          weights: str = "uniform", **search_kwargs) -> dict[int, float]:
    """Accuracy for every k in `ks`, from one search with the largest k."""
    ks = sorted(set(int(k) for k in ks))
    nb = search(x_train, x_query, max(ks), metric, **search_kwargs)
    labels = np.asarray(y_train)[nb.indices]
    y_query = np.asarray(y_query)
    return {k: float((vote(labels, nb.distances, k, weights) == y_query).mean()) for k in ks}
