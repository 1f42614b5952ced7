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
  threshold is provably not a neighbour; a query whose survivors overflow the fixed capacities
  falls back to brute force.

Votes follow scikit-learn's KNeighborsClassifier: uniform votes or 1/distance weights (a row
with zero distances gives weight 1 to those and 0 to the rest); a tie goes to the smallest label.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

METRICS = ("l1", "l2")
WEIGHTS = ("uniform", "distance")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of device memory the largest chunk may use

# Capacities of the L1 cascade; overflowing queries are recomputed exactly.
# Measured on Fashion-MNIST (k=5): about 5% of queries overflow the first pass; a wider pass
# certifies most of those and the rest take the brute-force path.
_L1_SEED_CANDIDATES = 64
_L1_STAGE1_CAPACITY = 4096
_L1_STAGE2_CAPACITY = 1024
# Queries that overflow get a second pass with 4x the capacities (cheaper than brute force).
_L1_WIDE_CAPACITY = 16384
_BRUTE_CHUNK = 32
_WIDE_CHUNK = 8
_L2_CANDIDATE_MARGIN = 8


class Neighbors(NamedTuple):
    """Distances ([n_query, k], L1 or Euclidean) and training indices, nearest first."""
    distances: np.ndarray
    indices: np.ndarray


def _flatten(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    return x.reshape(x.shape[0], -1)


def _work_dtype(x) -> jnp.dtype:
    return jnp.int32 if jnp.issubdtype(x.dtype, jnp.integer) else jnp.float32


def pairwise_distances(queries, references, metric: str = "l2") -> jnp.ndarray:
    """Exact [n_q, n_r] distances: L1, or squared L2 (computed as sums of squared differences)."""
    q, r = _flatten(queries), _flatten(references)
    if metric == "l1":
        # float32 is exact for 8-bit data (sums stay below 2**24) and XLA CPU vectorises it
        # about 8x better than int32.
        return jnp.abs(q[:, None, :].astype(jnp.float32) - r[None, :, :].astype(jnp.float32)).sum(-1)
    dtype = _work_dtype(q)
    diff = q[:, None, :].astype(dtype) - r[None, :, :].astype(dtype)
    if metric == "l2":
        return (diff * diff).sum(-1)
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}.")


def _top_k_fast(x, k):
    """lax.top_k kept on XLA's fast top-k path.

    When top_k's indices feed a gather in the same computation, XLA CPU (jax 0.10) lowers it as
    a full sort of every row: 25x slower for 60,000 columns. The barrier keeps it a TopK.
    """
    return jax.lax.optimization_barrier(jax.lax.top_k(x, k))


def _select_k(dist, idx, k):
    """The k smallest (dist, idx) pairs per row, ordered by distance then index."""
    dist, idx = jax.lax.sort((dist, idx), dimension=1, num_keys=2)
    return dist[:, :k], idx[:, :k]


def _pool_sums(x, pool: int) -> jnp.ndarray:
    """Sums over pool x pool blocks of [n, H, W] images (zero-padded), flattened, float32."""
    n, h, w = x.shape
    ph, pw = -h % pool, -w % pool
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, ph), (0, pw)))
    h, w = h + ph, w + pw
    return x.reshape(n, h // pool, pool, w // pool, pool).sum((2, 4)).reshape(n, -1)


def _as_images(x) -> jnp.ndarray:
    """[n, H, W] view for pooling: images stay images, flat vectors become one row each."""
    x = jnp.asarray(x)
    if x.ndim == 3:
        return x
    return x.reshape(x.shape[0], 1, -1)


def _compact(mask, capacity: int):
    """Indices of the first `capacity` True entries per row (in index order), and the counts."""
    counts = jnp.cumsum(mask.astype(jnp.int32), axis=1)
    targets = jnp.arange(1, capacity + 1, dtype=jnp.int32)
    pos = jax.vmap(lambda c: jnp.searchsorted(c, targets, side="left", method="scan_unrolled"))(counts)
    valid = targets[None, :] <= counts[:, -1:]
    return jnp.minimum(pos, mask.shape[1] - 1), valid, counts[:, -1]


def _tolerance(threshold):
    # Float inputs make the float32 sums inexact; keep slightly more candidates, never fewer.
    return threshold * (1 + 1e-5) + 1e-6


def _interval_l1(q_sums, codes, step: int):
    """Lower bound of sum |q - s| where each s is only known as a code: s in [step*c, step*c+step-1].

    step=0 means the codes are the exact sums. Distances to the interval are never larger than
    the distance to the true sum, so the bound stays a lower bound of the L1 distance.
    """
    if step == 0:
        return jnp.abs(q_sums[:, None, :] - codes.astype(jnp.float32)).sum(-1)
    lo = codes.astype(jnp.float32) * step
    gap = jnp.maximum(jnp.maximum(lo - q_sums[:, None, :], q_sums[:, None, :] - (lo + (step - 1))), 0.0)
    return gap.sum(-1)


def _gather_rows(table, idx):
    # The barrier keeps the gather a plain copy of contiguous rows; fused into the arithmetic it
    # runs element by element. Narrow tables (uint8) move 4x fewer bytes than float32 ones.
    return jax.lax.optimization_barrier(table[idx]).astype(jnp.float32)


@jax.jit
def _pooled_bound(q_img, r_pool4):
    return pairwise_distances(_pool_sums(q_img, 4), r_pool4, "l1")


def _l1_chunk(q_img, r_exact, r_pool4, r_codes2, *, k, code_step, cap1, cap2):
    """Exact L1 top-k for a chunk of queries by the pooled-bound cascade; returns a `certified` mask.

    cap1 / cap2: how many candidates survive the 4x4 and 2x2 bounds at most (static shapes);
    a query with more is not certified.
    """
    # Two programs: see _brute_chunk for why top_k must not share one with a big reduction.
    lb4 = _pooled_bound(q_img, r_pool4)                                             # [q, n]
    return _l1_prune(q_img, lb4, r_exact, r_codes2, k=k, code_step=code_step, cap1=cap1, cap2=cap2)


@functools.partial(jax.jit, static_argnames=("k", "code_step", "cap1", "cap2"))
def _l1_prune(q_img, lb4, r_exact, r_codes2, *, k, code_step, cap1, cap2):
    n_ref = r_exact.shape[0]
    q_flat = q_img.reshape(q_img.shape[0], -1).astype(jnp.float32)
    # Threshold: the k-th exact distance among the best few candidates by the coarse bound.
    n_seed = min(max(_L1_SEED_CANDIDATES, k), n_ref)
    _, seed_idx = _top_k_fast(-lb4, n_seed)
    seed_d = jnp.abs(q_flat[:, None, :] - _gather_rows(r_exact, seed_idx)).sum(-1)
    threshold = _tolerance(jnp.sort(seed_d, axis=1)[:, k - 1])
    cap1 = min(max(cap1, k), n_ref)  # never fewer candidates than neighbours asked for
    idx1, valid1, count1 = _compact(lb4 <= threshold[:, None], cap1)
    lb2 = _interval_l1(_pool_sums(q_img, 2), jax.lax.optimization_barrier(r_codes2[idx1]), code_step)
    keep2 = valid1 & (lb2 <= threshold[:, None])
    cap2 = min(max(cap2, k), cap1)
    pos2, valid2, count2 = _compact(keep2, cap2)
    idx2 = jnp.take_along_axis(idx1, pos2, axis=1)
    exact = jnp.abs(q_flat[:, None, :] - _gather_rows(r_exact, idx2)).sum(-1)
    exact = jnp.where(valid2, exact, jnp.inf)
    dist, idx = _select_k(exact, idx2, k)
    certified = (count1 <= cap1) & (count2 <= cap2)
    return dist, idx, certified


@functools.partial(jax.jit, static_argnames=("k", "n_candidates"))
def _l2_chunk(q, r, r_t, r_sq, *, k, n_candidates):
    """Exact squared-L2 top-k for a chunk of flat queries; returns a `certified` mask.

    r: [n, d] training points (their own dtype, for the exact re-rank); r_t: [d, n] float32,
    converted and transposed once per search so no chunk pays for it again.
    """
    dtype = _work_dtype(q)
    qf = q.astype(jnp.float32)
    # ||q||^2 does not change a query's ranking, so it is left out of the expansion.
    approx = r_sq[None, :] - 2.0 * (qf @ r_t)
    neg_approx, cand = _top_k_fast(-approx, n_candidates + 1)
    diff = q[:, None, :].astype(dtype) - jax.lax.optimization_barrier(r[cand[:, :n_candidates]]).astype(dtype)
    exact = (diff * diff).sum(-1)
    dist, idx = _select_k(exact, cand[:, :n_candidates], k)
    # Float32 rounding error of each expanded distance is below eps * (||q||^2 + max||r||^2).
    q_sq = (qf * qf).sum(1)
    eps = 2.0 * (q.shape[1] + 2) * np.finfo(np.float32).eps * (q_sq + r_sq.max())
    # The best non-candidate. Reading it from top_k's values matters: gathering from `approx`
    # makes XLA recompute the matmul per gathered element (30x slower on CPU).
    outside = -neg_approx[:, -1] + q_sq
    certified = outside - eps > dist[:, -1].astype(jnp.float32) * (1 + 1e-6)
    return dist, idx, certified


_distances_jit = jax.jit(pairwise_distances, static_argnames=("metric",))
_smallest_k_jit = jax.jit(lambda d, k: jax.lax.top_k(-d, k), static_argnames=("k",))


def _brute_chunk(q, r, *, k, metric):
    """All distances, then the k smallest. top_k puts the lower index first among equal values.

    Two separate programs on purpose: on XLA CPU (jax 0.10) a top_k compiled together with the
    distance reduction runs 500x slower than a top_k whose input is a materialised array.
    """
    neg, idx = _smallest_k_jit(_distances_jit(q, r, metric=metric), k=k)
    return -neg, idx


def chunk_size(n_ref: int, dim: int, memory_budget: int, metric: str) -> int:
    """Queries per chunk so the chunk's largest intermediates fit the memory budget."""
    per_query = 4 * n_ref * 4  # a few [q, n_ref] float32/int32 rows
    if metric == "l1":
        per_query += 4 * (_L1_STAGE1_CAPACITY * (dim // 4 + 8) + _L1_STAGE2_CAPACITY * dim)
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
    run_chunk, run_wide = _make_chunk_fn(r, k, metric, method)
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
    if redo.size and run_wide is not None:
        log.info("knn %s: %d of %d queries took a wider pruning pass", metric, redo.size, n_query)
        still = []
        for rows, queries in _fixed_size_chunks(x_query, redo, _WIDE_CHUNK):
            d, i, certified = run_wide(queries)
            ok = np.asarray(certified)[:rows.size]
            dist[rows[ok]], idx[rows[ok]] = np.asarray(d)[:rows.size][ok], np.asarray(i)[:rows.size][ok]
            still.append(rows[~ok])
        redo = np.concatenate(still)
    if redo.size:
        # Queries the pruning could not certify: all distances.
        log.info("knn %s: %d of %d queries take the brute-force path", metric, redo.size, n_query)
        for rows, queries in _fixed_size_chunks(x_query, redo, _BRUTE_CHUNK):
            bd, bi = _brute_chunk(queries, r, k=k, metric=metric)
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
    """(first_pass, wide_pass): functions chunk -> (squared-or-L1 distances, indices, certified).

    wide_pass (L1 only, else None) re-runs the pruning with larger capacities for the queries the
    first pass could not certify.
    """
    if method == "brute":
        def brute(q):
            d, i = _brute_chunk(q, r, k=k, metric=metric)
            return d, i, jnp.ones(q.shape[0], bool)
        return brute, None
    if method != "auto":
        raise ValueError(f"unknown method {method!r}; choose 'auto' or 'brute'.")
    if metric == "l2":
        r_flat = _flatten(r)
        r_t = r_flat.astype(jnp.float32).T
        r_sq = (r_t * r_t).sum(0)
        n_cand = min(k + _L2_CANDIDATE_MARGIN, r_flat.shape[0] - 1)
        if n_cand < k:  # tiny training sets: brute force is exact and cheap
            return _make_chunk_fn(r, k, metric, "brute")
        return lambda q: _l2_chunk(_flatten(q), r_flat, r_t, r_sq, k=k, n_candidates=n_cand), None
    r_img = _as_images(r)
    pool4, pool2 = _pool_sums(r_img, 4), _pool_sums(r_img, 2)
    if r_img.dtype == jnp.uint8:
        # 8-bit pixels: gather 8-bit rows, and 2x2 sums (0..1020) as 8-bit codes floor(sum / 4).
        r_exact = r_img.reshape(r_img.shape[0], -1)
        codes2, step = (pool2 // 4).astype(jnp.uint8), 4
    else:
        r_exact = r_img.reshape(r_img.shape[0], -1).astype(jnp.float32)
        codes2, step = pool2, 0

    def with_capacities(cap1, cap2):
        return lambda q: _l1_chunk(_as_images(q), r_exact, pool4, codes2, k=k, code_step=step,
                                   cap1=cap1, cap2=cap2)

    return (with_capacities(_L1_STAGE1_CAPACITY, _L1_STAGE2_CAPACITY),
            with_capacities(_L1_WIDE_CAPACITY, _L1_WIDE_CAPACITY // 4))


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
