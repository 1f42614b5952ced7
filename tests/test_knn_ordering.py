"""knn.ordering's PCA-bisection order: a permutation whose blocks are compact."""

import numpy as np

from fmnist_jax.knn import ordering


def test_the_bisection_order_is_a_permutation_with_tighter_blocks_than_random():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 5)) * 10
    points = np.concatenate([c + rng.normal(size=(64, 5)) for c in centres])[rng.permutation(512)]
    order = ordering.bisection_order(points, block=64)
    assert sorted(order.tolist()) == list(range(512))

    def spread(o):     # mean per-block bounding-box width
        blocks = points[o].reshape(8, 64, 5)
        return (blocks.max(1) - blocks.min(1)).mean()
    # Eight well-separated clusters of 64: the bisection recovers them, so its blocks are the
    # clusters' own boxes, far tighter than blocks of the shuffled rows.
    assert spread(order) < 0.3 * spread(np.arange(512))
