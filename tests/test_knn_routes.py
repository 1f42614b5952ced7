"""The pruning route that benchmarks.knn_routes measures: its embedding distance is a lower bound."""

import numpy as np

from benchmarks import knn_routes


def test_embedding_distance_bounds_the_squared_distance_from_below_and_is_tight_at_full_rank():
    rng = np.random.default_rng(0)
    # Near a 5-dimensional subspace, as images are near a low-dimensional one.
    x = rng.normal(0, 50, (400, 5)) @ rng.normal(0, 1, (5, 49)) + rng.normal(0, 2, (400, 49))
    true = knn_routes._squared(x[:50], x)
    for dim in (1, 8, 30):
        mean, basis = knn_routes._principal_axes(x, dim)
        lb = knn_routes._squared(knn_routes._embed(x[:50], mean, basis), knn_routes._embed(x, mean, basis))
        assert (lb <= true * (1 + 1e-9) + 1e-6).all()
        if dim >= 8:  # past the subspace the bound is nearly the distance: it prunes, not trivially
            off_diagonal = true > 0
            assert np.median(lb[off_diagonal] / true[off_diagonal]) > 0.9
    # With every axis the residuals vanish and the bound is the distance itself.
    mean, basis = knn_routes._principal_axes(x, 49)
    full = knn_routes._squared(knn_routes._embed(x[:50], mean, basis), knn_routes._embed(x, mean, basis))
    np.testing.assert_allclose(full, true, rtol=1e-6, atol=1e-3)
