"""The per-chunk kernels of the exact k-NN search (`exact.search` chunks the queries and calls them).

Each takes one chunk of queries against every training point and returns its k best
candidates: `brute_chunk` (all distances, then top-k), `l2_chunk` (the matmul expansion,
re-ranked exactly and certified by a float32 error bound) and `l1_chunk` (the pooled lower-bound
cascade). The certification flags they return say which queries the caller must redo.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("l1", "l2")

# Exact distances of this many best 4x4-pooled candidates give the L1 cascade its threshold.
_L1_SEED_CANDIDATES = 64
# With ordered training points, the seeds come from the 16 blocks of smallest bound per block of
# seeds (probe, 253 queries, k=5: 16 blocks give the same thresholds as all 938; 4 give 1.001x).
_SEED_BLOCKS_PER_BLOCK = 16


def flatten(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    return x.reshape(x.shape[0], -1)


def _work_dtype(x) -> jnp.dtype:
    return jnp.int32 if jnp.issubdtype(x.dtype, jnp.integer) else jnp.float32


def pairwise_distances(queries, references, metric: str = "l2") -> jnp.ndarray:
    """Exact [n_q, n_r] distances: L1, or squared L2 (computed as sums of squared differences)."""
    q, r = flatten(queries), flatten(references)
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


def pool_sums(x, pool: int) -> jnp.ndarray:
    """Sums over pool x pool blocks of [n, H, W] images (zero-padded), flattened, float32."""
    n, h, w = x.shape
    ph, pw = -h % pool, -w % pool
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, ph), (0, pw)))
    h, w = h + ph, w + pw
    return x.reshape(n, h // pool, pool, w // pool, pool).sum((2, 4)).reshape(n, -1)


def as_images(x) -> jnp.ndarray:
    """[n, H, W] view for pooling: images stay images, flat vectors become one row each."""
    x = jnp.asarray(x)
    if x.ndim == 3:
        return x
    return x.reshape(x.shape[0], 1, -1)


# Columns per block of the compaction's running count (see _running_count).
COUNT_BLOCK = 64


def _running_count(mask) -> jnp.ndarray:
    """Inclusive running count of True entries along each row of a [q, n] mask (int32).

    A cumsum over 60,000 columns lowers, on XLA CPU, to an associative scan of some 30 passes over
    the whole array. Here the count within each block of COUNT_BLOCK columns is one matmul with
    a triangular matrix of ones (exact: sums of at most 64 ones in float32), and only the block
    totals go through cumsum: about 25% faster for a chunk of 253 x 60,000 (benchmarks/README.md).
    """
    q, n = mask.shape
    blocks = -(-n // COUNT_BLOCK)
    padded = jnp.pad(mask, ((0, 0), (0, blocks * COUNT_BLOCK - n))).astype(jnp.float32)
    upper = jnp.triu(jnp.ones((COUNT_BLOCK, COUNT_BLOCK), jnp.float32))      # [i, j] = 1 for i <= j
    within = (padded.reshape(q, blocks, COUNT_BLOCK) @ upper).astype(jnp.int32)
    totals = within[..., -1]
    before = jnp.cumsum(totals, axis=1) - totals                               # in the blocks before
    return (within + before[..., None]).reshape(q, -1)[:, :n]


def _compact(mask, capacity: int):
    """Indices of the first `capacity` True entries per row (in index order), and the counts."""
    counts = _running_count(mask)
    targets = jnp.arange(1, capacity + 1, dtype=jnp.int32)
    pos = jax.vmap(lambda c: jnp.searchsorted(c, targets, side="left", method="scan_unrolled"))(counts)
    valid = targets[None, :] <= counts[:, -1:]
    return jnp.minimum(pos, mask.shape[1] - 1), valid, counts[:, -1]


def block_minima(values) -> jnp.ndarray:
    """[q, ceil(n / COUNT_BLOCK)] minima of each block of COUNT_BLOCK consecutive columns.

    Halving (the elementwise minimum of a block's two halves, six times) instead of a reduction
    over the last axis of a [q, blocks, 64] view: XLA CPU vectorises the elementwise minima and
    not the short reduction, 5 ms against 24 ms for 253 x 60,000 (and padding the row to whole
    blocks would copy it: the partial last block is reduced on its own).
    """
    return _block_reduce(values, jnp.minimum, lambda tail: tail.min(1, keepdims=True))


def block_counts(mask) -> jnp.ndarray:
    """[q, ceil(n / COUNT_BLOCK)] numbers of True entries in each block of a [q, n] mask (float32,
    exact: at most 64), by halving as `block_minima`."""
    return _block_reduce(mask.astype(jnp.float32), jnp.add, lambda tail: tail.sum(1, keepdims=True))


def _block_reduce(values, combine, reduce_tail):
    q, n = values.shape
    whole = n // COUNT_BLOCK
    by_block = values[:, :whole * COUNT_BLOCK].reshape(q, whole, COUNT_BLOCK)
    while by_block.shape[-1] > 1:
        half = by_block.shape[-1] // 2
        by_block = combine(by_block[..., :half], by_block[..., half:])
    reduced = by_block[..., 0]
    if n > whole * COUNT_BLOCK:
        reduced = jnp.concatenate([reduced, reduce_tail(values[:, whole * COUNT_BLOCK:])], axis=1)
    return reduced


def _block_columns(values, block_idx):
    """The columns of the given blocks ([q, b] block indices) of `values` [q, n], as [q, b * 64]
    values (+inf past the last column) and their column indices."""
    n = values.shape[1]
    columns = (block_idx[..., None] * COUNT_BLOCK + jnp.arange(COUNT_BLOCK, dtype=block_idx.dtype)).reshape(
        block_idx.shape[0], -1)
    picked = jnp.take_along_axis(values, jnp.minimum(columns, n - 1), axis=1)
    return jnp.where(columns < n, picked, jnp.inf), columns


def _seeds_in_blocks(bound, minima, n_seed: int, n_blocks: int):
    """Columns of the n_seed smallest bounds within the n_blocks blocks of smallest minimum.

    Any n_seed distinct training points give a valid threshold (the k-th of their exact
    distances bounds the true k-th from above); when the points are stored in bisection order the
    best blocks hold the best bounds, and two small top-k's replace one over every column.
    """
    _, best_blocks = _top_k_fast(-minima, n_blocks)
    values, columns = _block_columns(bound, best_blocks)
    _, pos = _top_k_fast(-values, n_seed)
    return jnp.take_along_axis(columns, pos, axis=1)


def _compact_in_blocks(bound, threshold, minima, block_capacity: int, capacity: int):
    """`_compact(bound <= threshold[:, None], capacity)` through the blocks that hold a survivor.

    The first `block_capacity` blocks whose minimum is within the threshold are gathered, and the
    running count runs over their columns only: for a training set ordered so that each query's
    survivors sit in few blocks (`ordering.bisection_order`), 8,192 columns instead of 60,000.
    Returns the column indices (in index order), their validity, the survivors counted in the kept
    blocks and the number of blocks holding one; the result equals `_compact`'s when that number
    is at most block_capacity.
    """
    block_pos, block_valid, block_count = _compact(minima <= threshold[:, None], block_capacity)
    values, columns = _block_columns(bound, block_pos)
    kept = (values <= threshold[:, None]) & jnp.repeat(block_valid, COUNT_BLOCK, axis=1)
    pos, valid, count = _compact(kept, capacity)
    return jnp.minimum(jnp.take_along_axis(columns, pos, axis=1), bound.shape[1] - 1), valid, count, block_count


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


def l1_to_columns(queries, references_t) -> jnp.ndarray:
    """Exact [n_q, n] L1 distances of flat queries [n_q, d] to references stored as columns [d, n].

    The sum over the d coordinates is written out, one broadcast |q_i - r_i| row per coordinate:
    XLA CPU fuses it into one loop nest vectorised along the n references, about 4x the throughput
    of reducing the last axis of a [n_q, n, d] block (benchmarks/README.md, "L1 layout"). For small
    d only (the cascade's 49 pooled sums): the program grows with d. Float32; the sums are exact
    for integer data below 2**24, whatever their order.
    """
    q = jnp.asarray(queries, jnp.float32)
    r = jnp.asarray(references_t, jnp.float32)
    total = jnp.abs(q[:, 0:1] - r[0][None, :])
    for i in range(1, q.shape[1]):
        total = total + jnp.abs(q[:, i:i + 1] - r[i][None, :])
    return total


@jax.jit
def _pooled_bound(q_img, r_pool4_t):
    return l1_to_columns(pool_sums(q_img, 4), r_pool4_t)


class L1Tier(NamedTuple):
    """One tier of the L1 cascade's capacities: the `share` of a chunk's queries (those with the
    fewest surviving blocks) whose 4x4 and 2x2 survivors are compacted to at most cap1 / cap2
    candidates, through at most block_cap blocks of COUNT_BLOCK stored rows (None: whole rows)."""
    share: float
    cap1: int
    cap2: int
    block_cap: int | None = None


def tier_sizes(tiers, n_query: int) -> tuple[int, ...]:
    """Queries of a chunk of n_query in each tier: the shares' cumulative sums, rounded, so the
    sizes always add up to n_query (the last tier takes what is left)."""
    total = sum(t.share for t in tiers)
    edges = [round(n_query * sum(t.share for t in tiers[:i + 1]) / total) for i in range(len(tiers))]
    edges[-1] = n_query
    return tuple(b - a for a, b in zip([0] + edges[:-1], edges))


def l1_chunk(q_img, r_exact, r_pool4_t, r_codes2, *, k, code_step, tiers, original_index=None):
    """Exact L1 top-k for a chunk of queries by the pooled-bound cascade; returns a `certified` mask.

    r_pool4_t: the training images' 4x4 pooled sums as columns ([49, n] for 28x28 images: the
    layout `l1_to_columns` runs fast on), transposed once per search.

    tiers: `L1Tier`s, smallest capacities first (static shapes). The survivors of a query vary
    over two orders of magnitude (a median of 396 of the 4x4 bound's, 10% over 2,200), and every
    step after the bound costs in proportion to its capacity, not to the survivors: so the chunk's
    queries are ranked by how many blocks hold a survivor and each tier's share of them takes that
    tier's capacities. A query with more survivors than its tier holds is not certified.

    original_index: for training points stored in another order (`ordering.bisection_order`),
    the original index of each stored row; the returned indices, and the ties among equal
    distances, are then in the original numbering. A tier's block_cap compacts the 4x4 bound's
    survivors through at most that many blocks (`_compact_in_blocks`; a query whose survivors span
    more is not certified); None compacts the whole row.
    """
    # Two programs: see brute_chunk for why top_k must not share one with a big reduction.
    lb4 = _pooled_bound(q_img, r_pool4_t)                                           # [q, n]
    if original_index is None:
        original_index = jnp.arange(r_exact.shape[0], dtype=jnp.int32)
    return _l1_prune(q_img, lb4, r_exact, r_codes2, original_index, k=k, code_step=code_step,
                     tiers=tuple(L1Tier(*t) for t in tiers))


@functools.partial(jax.jit, static_argnames=("k", "code_step", "tiers"))
def _l1_prune(q_img, lb4, r_exact, r_codes2, original_index, *, k, code_step, tiers):
    n_query, n_ref = lb4.shape
    q_flat = q_img.reshape(n_query, -1).astype(jnp.float32)
    minima = block_minima(lb4)
    threshold = _l1_threshold(q_flat, lb4, minima, r_exact, k)
    sizes = tier_sizes(tiers, n_query)
    if sum(1 for n in sizes if n) == 1:
        tier = tiers[next(i for i, n in enumerate(sizes) if n)]
        return _l1_candidates(q_img, q_flat, lb4, threshold, minima, r_exact, r_codes2, original_index,
                              k=k, code_step=code_step, tier=tier)
    # Ranked by what the capacities must hold: the survivors, or the blocks holding them in units
    # of the tiers' survivors per block (cheap: per-block counts by halving, about 5 ms a chunk).
    per_block = max(t.cap1 / t.block_cap for t in tiers if t.block_cap) if any(t.block_cap for t in tiers) else 0
    counts = block_counts(lb4 <= threshold[:, None])
    rank = jnp.argsort(jnp.maximum(counts.sum(1), per_block * (counts > 0).sum(1)), stable=True)
    dist = jnp.zeros((n_query, k), jnp.float32)
    idx = jnp.zeros((n_query, k), jnp.int32)
    certified = jnp.zeros(n_query, bool)
    start = 0
    for tier, size in zip(tiers, sizes):
        if not size:
            continue
        rows = rank[start:start + size]
        start += size
        d, i, c = _l1_candidates(q_img[rows], q_flat[rows], lb4[rows], threshold[rows], minima[rows], r_exact,
                                 r_codes2, original_index, k=k, code_step=code_step, tier=tier)
        dist, idx, certified = dist.at[rows].set(d), idx.at[rows].set(i), certified.at[rows].set(c)
    return dist, idx, certified


def _l1_threshold(q_flat, lb4, minima, r_exact, k):
    """Each query's k-th exact distance among a few of its best candidates by the 4x4 bound (an
    upper bound of its true k-th distance, so every point with a larger bound can go)."""
    n_ref = r_exact.shape[0]
    n_seed = min(max(_L1_SEED_CANDIDATES, k), n_ref)
    seed_blocks = min(-(-n_seed // COUNT_BLOCK) * _SEED_BLOCKS_PER_BLOCK, minima.shape[1])
    if seed_blocks * COUNT_BLOCK < n_ref:
        seed_idx = _seeds_in_blocks(lb4, minima, n_seed, seed_blocks)
    else:
        _, seed_idx = _top_k_fast(-lb4, n_seed)
    seed_d = jnp.abs(q_flat[:, None, :] - _gather_rows(r_exact, seed_idx)).sum(-1)
    return _tolerance(jnp.sort(seed_d, axis=1)[:, k - 1])


def _l1_candidates(q_img, q_flat, lb4, threshold, minima, r_exact, r_codes2, original_index, *, k, code_step,
                   tier):
    """The k best of the points whose 4x4 and then 2x2 bounds are within the threshold, at the
    tier's capacities, and whether they fit them (certified)."""
    n_ref = r_exact.shape[0]
    cap1 = min(max(tier.cap1, k), n_ref)  # never fewer candidates than neighbours asked for
    if tier.block_cap is not None and tier.block_cap * COUNT_BLOCK < n_ref:
        idx1, valid1, count1, block_count = _compact_in_blocks(lb4, threshold, minima, tier.block_cap, cap1)
        blocks_fit = block_count <= tier.block_cap
    else:
        idx1, valid1, count1 = _compact(lb4 <= threshold[:, None], cap1)
        blocks_fit = True
    lb2 = _interval_l1(pool_sums(q_img, 2), jax.lax.optimization_barrier(r_codes2[idx1]), code_step)
    keep2 = valid1 & (lb2 <= threshold[:, None])
    cap2 = min(max(tier.cap2, k), cap1)
    pos2, valid2, count2 = _compact(keep2, cap2)
    idx2 = jnp.take_along_axis(idx1, pos2, axis=1)
    exact = jnp.abs(q_flat[:, None, :] - _gather_rows(r_exact, idx2)).sum(-1)
    exact = jnp.where(valid2, exact, jnp.inf)
    dist, idx = _select_k(exact, original_index[idx2], k)
    certified = (count1 <= cap1) & (count2 <= cap2) & blocks_fit
    return dist, idx, certified


@functools.partial(jax.jit, static_argnames=("k", "n_candidates"))
def l2_chunk(q, r, r_t, r_sq, *, k, n_candidates):
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


def brute_chunk(q, r, *, k, metric):
    """All distances, then the k smallest. top_k puts the lower index first among equal values.

    Two separate programs on purpose: on XLA CPU (jax 0.10) a top_k compiled together with the
    distance reduction runs 500x slower than a top_k whose input is a materialised array.
    """
    neg, idx = _smallest_k_jit(_distances_jit(q, r, metric=metric), k=k)
    return -neg, idx
