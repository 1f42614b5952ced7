"""An order of the training set in which consecutive blocks of points are close together.

The L1 cascade (`kernels.l1_chunk`) keeps, per query, the few hundred training points whose
pooled bound is within the query's threshold. As stored, those survivors are spread over a third
of all blocks of 64 points; after ordering the points by recursive bisection along their top
principal direction they fall in a median of 33 of the 938 blocks (Fashion-MNIST, k=5,
benchmarks/README.md), so the cascade can compact the blocks first and the points of the few
blocks kept afterwards.
"""

from __future__ import annotations

import numpy as np

_POWER_ITERATIONS = 8


def bisection_order(features: np.ndarray, block: int, seed: int = 0) -> np.ndarray:
    """A permutation of the rows of `features` [n, d] in which each run of `block` rows is one
    leaf of a recursive split at the median of the top principal direction.

    Every leaf but the last is full, so leaves line up with the blocks of `block` rows. The result
    depends only on the features and the seed (the power iteration's start vector).
    """
    features = np.asarray(features, np.float64)
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}.")
    rng = np.random.default_rng(seed)
    leaves = []
    pending = [np.arange(features.shape[0])]
    while pending:              # depth-first, left half first: leaves come out in tree order
        idx = pending.pop()
        if idx.size <= block:
            leaves.append(idx)
            continue
        centred = features[idx] - features[idx].mean(0)
        direction = rng.standard_normal(features.shape[1])
        for _ in range(_POWER_ITERATIONS):
            direction = centred.T @ (centred @ direction)
            direction /= max(np.linalg.norm(direction), 1e-300)
        by_projection = idx[np.argsort(centred @ direction, kind="stable")]
        half = (idx.size // block + 1) // 2 * block      # a multiple of the block: leaves stay full
        pending.append(by_projection[half:])
        pending.append(by_projection[:half])
    return np.concatenate(leaves) if leaves else np.zeros(0, np.int64)
