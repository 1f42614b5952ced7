"""k-NN: exact agreement with brute force and scikit-learn, votes, sweeps, errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from fmnist_jax.knn import exact, kernels
from tests.conftest import make_dataset


def _sklearn_predict(x_train, y_train, x_query, k, metric, weights):
    p = 1 if metric == "l1" else 2
    model = KNeighborsClassifier(n_neighbors=k, weights=weights, p=p, algorithm="brute")
    model.fit(x_train.reshape(len(x_train), -1).astype(np.float64), y_train)
    return model.predict(x_query.reshape(len(x_query), -1).astype(np.float64))


@pytest.mark.parametrize("metric", exact.METRICS)
def test_pruned_search_equals_brute_force(metric):
    ds = make_dataset(n_train=600, n_test=70, seed=1)
    # A tiny memory budget forces many chunks, including a padded last one.
    fast = exact.search(ds.x_train, ds.x_test, 7, metric, memory_budget=1 << 20)
    brute = exact.search(ds.x_train, ds.x_test, 7, metric, method="brute")
    np.testing.assert_array_equal(fast.indices, brute.indices)
    np.testing.assert_allclose(fast.distances, brute.distances)
    assert np.all(np.diff(fast.distances, axis=1) >= 0)


def _smooth_images(n, rng, noise=20):
    # Blocky images plus noise: the pooled bounds prune, but not always within tiny capacities.
    blocks = np.repeat(np.repeat(rng.integers(0, 256, (n, 7, 7)), 4, 1), 4, 2)
    return np.clip(blocks + rng.integers(-noise, noise + 1, (n, 28, 28)), 0, 255).astype(np.uint8)


def test_l1_cascade_overflow_falls_back_exactly(monkeypatch, caplog):
    # Tiny capacities: most queries overflow the first pass; the two wider passes certify some of
    # those, and the rest take brute force. Every path must give the exact answer.
    monkeypatch.setattr(exact, "_L1_TIERS", (kernels.L1Tier(1.0, 8, 2),))
    monkeypatch.setattr(exact, "_L1_WIDE_PASSES", (((kernels.L1Tier(1.0, 20, 5),), 8),
                                                   ((kernels.L1Tier(1.0, 40, 10),), 8)))
    rng = np.random.default_rng(0)
    x_train, x_query = _smooth_images(500, rng), _smooth_images(50, rng)
    with caplog.at_level("INFO", logger="fmnist_jax.knn.exact"):
        fast = exact.search(x_train, x_query, 5, "l1")
    assert caplog.text.count("took a wider pruning pass") == 2 and "brute-force path" in caplog.text
    brute = exact.search(x_train, x_query, 5, "l1", method="brute")
    np.testing.assert_array_equal(fast.indices, brute.indices)


def test_capacities_below_k_still_return_k_neighbours(monkeypatch):
    monkeypatch.setattr(exact, "_L1_TIERS", (kernels.L1Tier(0.5, 4, 2), kernels.L1Tier(0.5, 6, 3)))
    rng = np.random.default_rng(1)
    x_train, x_query = _smooth_images(300, rng), _smooth_images(10, rng)
    fast = exact.search(x_train, x_query, 9, "l1")
    np.testing.assert_array_equal(fast.indices, exact.search(x_train, x_query, 9, "l1", method="brute").indices)


def test_distances_are_true_distances():
    x = np.array([[0, 0], [3, 4], [1, 1]], np.uint8)
    nb = exact.search(x, x[:1], 3, "l2", method="brute")
    np.testing.assert_allclose(nb.distances[0], [0, np.sqrt(2), 5])
    nb = exact.search(x, x[:1], 3, "l1")
    np.testing.assert_allclose(nb.distances[0], [0, 2, 7])


def test_ties_go_to_the_smaller_index_and_the_smaller_label():
    x_train = np.array([[0], [2], [2], [4]], np.uint8)  # 1 and 2 tie from a query at 2
    nb = exact.search(x_train, np.array([[3]], np.uint8), 2, "l1")
    np.testing.assert_array_equal(nb.indices[0], [1, 2])
    pred = exact.vote(np.array([[3, 1]]), np.array([[1.0, 1.0]]), 2, "uniform")
    assert pred[0] == 1


def test_distance_weights_follow_sklearn_zero_distance_rule():
    labels = np.array([[4, 2, 2]])
    assert exact.vote(labels, np.array([[0.0, 1.0, 1.0]]), 3, "distance")[0] == 4
    assert exact.vote(labels, np.array([[1.0, 3.0, 3.0]]), 3, "distance")[0] == 4   # 1 > 2/3
    assert exact.vote(labels, np.array([[1.0, 1.5, 1.5]]), 3, "distance")[0] == 2   # 1 < 4/3


def test_sweep_scores_every_k_from_one_search():
    ds = make_dataset(n_train=300, n_test=60, seed=4)
    acc = exact.sweep(ds.x_train, ds.y_train, ds.x_test, ds.y_test, [5, 1, 3], "l2")
    assert list(acc) == [1, 3, 5]
    for k, a in acc.items():
        expected = (exact.predict(ds.x_train, ds.y_train, ds.x_test, k, "l2") == ds.y_test).mean()
        assert a == pytest.approx(expected)


def test_float_inputs_work():
    ds = make_dataset(n_train=200, n_test=20, seed=5)
    a = exact.search(ds.x_train / 255.0, ds.x_test / 255.0, 3, "l1").indices
    b = exact.search(ds.x_train, ds.x_test, 3, "l1").indices
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k must be between 1"),
    (dict(k=1000), "k must be between 1"),
    (dict(metric="cosine"), "unknown metric"),
])
def test_bad_arguments(kwargs, message):
    ds = make_dataset(n_train=50, n_test=5)
    args = dict(k=3, metric="l2") | kwargs
    with pytest.raises(ValueError, match=message):
        exact.search(ds.x_train, ds.x_test, **args)


@pytest.mark.parametrize("metric", exact.METRICS)
@pytest.mark.parametrize("weights", exact.WEIGHTS)
def test_agrees_with_sklearn_on_synthetic_data(metric, weights):
    ds = make_dataset(n_train=400, n_test=80, seed=6)
    for k in (1, 5, 9):
        ours = exact.predict(ds.x_train, ds.y_train, ds.x_test, k, metric, weights)
        ref = _sklearn_predict(ds.x_train, ds.y_train, ds.x_test, k, metric, weights)
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("metric", exact.METRICS)
def test_agrees_with_sklearn_on_real_data(real_data, metric):
    # The subset is sized so the L1 cascade really prunes (12,000 > its first-stage capacity).
    # One search for the largest k, against scikit-learn's neighbours for it (its brute L1 takes
    # seconds a call); every k and weighting then votes from the first k neighbours of each, as
    # exact.sweep does (the votes themselves match scikit-learn's classifier in the synthetic test
    # above; predict, which is the vote of the search, is checked against scikit-learn's
    # classifier there too). The suite compiles for speed of compilation (tests/conftest.py), so
    # the search here runs several times slower than in use: 150 queries keep it to seconds.
    from sklearn.neighbors import NearestNeighbors
    x_train, y_train = real_data.x_train[:12000], real_data.y_train[:12000]
    x_test = real_data.x_test[:150]
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64)
    nb = exact.search(x_train, x_test, 9, metric)
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=9, p=1 if metric == "l1" else 2, algorithm="brute"
                                         ).fit(flat(x_train)).kneighbors(flat(x_test))
    np.testing.assert_allclose(np.asarray(nb.distances, np.float64), ref_dist, rtol=1e-5)
    for weights in exact.WEIGHTS:
        for k in (1, 5, 9):
            ours = exact.vote(y_train[nb.indices], nb.distances, k, weights)
            ref = exact.vote(y_train[ref_idx], ref_dist, k, weights)
            agreement = (ours == ref).mean()
            # 100% except exact distance ties, whose order scikit-learn leaves to argpartition.
            assert agreement == 1.0, f"{metric} {weights} k={k}: {agreement:.4f}"


def test_wider_l1_passes_get_smaller_chunks_within_the_memory_budget():
    budget = 1 << 30
    first = exact.chunk_size(60000, 784, budget, "l1")
    widest = exact.chunk_size(60000, 784, budget, "l1", (kernels.L1Tier(1.0, 16384, 4096),))
    assert 1 <= widest < first
    # The chunk's bytes (the formula's own count) stay within the budget.
    per_query = 4 * 60000 * 4 + 4 * (16384 * (784 // 4 + 8) + 4096 * 784)
    assert widest * per_query <= budget < (widest + 1) * per_query


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_column_layout_l1_equals_the_row_layout(dtype):
    """l1_to_columns (the pooled bound's fast layout) against the plain [q, n, d] reduction: exact
    for integer data, within float32 rounding of a 49-term sum for float data."""
    rng = np.random.default_rng(3)
    q = (rng.integers(0, 4081, (7, 49)) if dtype == np.uint8 else rng.normal(size=(7, 49))).astype(np.float32)
    r = (rng.integers(0, 4081, (33, 49)) if dtype == np.uint8 else rng.normal(size=(33, 49))).astype(np.float32)
    fast = np.asarray(kernels.l1_to_columns(q, r.T))
    reference = np.abs(q[:, None, :].astype(np.float64) - r[None, :, :]).sum(-1)
    if dtype == np.uint8:
        np.testing.assert_array_equal(fast, reference)
    else:
        np.testing.assert_allclose(fast, reference, rtol=49 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_running_count_and_compaction_equal_cumsum_and_nonzero(n):
    rng = np.random.default_rng(n)
    mask = rng.random((5, n)) < np.array([0.0, 0.02, 0.3, 0.9, 1.0])[:, None]
    np.testing.assert_array_equal(np.asarray(kernels._running_count(jnp.asarray(mask))), np.cumsum(mask, axis=1))
    capacity = 40
    idx, valid, counts = kernels._compact(jnp.asarray(mask), capacity)
    for row, i, v, c in zip(mask, np.asarray(idx), np.asarray(valid), np.asarray(counts)):
        expected = np.flatnonzero(row)[:capacity]
        assert c == row.sum() and v.sum() == len(expected)
        np.testing.assert_array_equal(i[v], expected)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_block_minima_equal_the_minimum_of_each_block(n):
    values = np.random.default_rng(n).normal(size=(3, n)).astype(np.float32)
    expected = [values[:, i:i + kernels.COUNT_BLOCK].min(1) for i in range(0, n, kernels.COUNT_BLOCK)]
    np.testing.assert_array_equal(np.asarray(kernels.block_minima(jnp.asarray(values))), np.stack(expected, 1))


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_block_counts_equal_the_true_entries_of_each_block(n):
    mask = np.random.default_rng(n).random((3, n)) < 0.3
    expected = [mask[:, i:i + kernels.COUNT_BLOCK].sum(1) for i in range(0, n, kernels.COUNT_BLOCK)]
    np.testing.assert_array_equal(np.asarray(kernels.block_counts(jnp.asarray(mask))), np.stack(expected, 1))


@pytest.mark.parametrize("n_query", [1, 2, 7, 253])
def test_tier_sizes_add_up_to_the_chunk_in_proportion(n_query):
    tiers = (kernels.L1Tier(0.4, 1, 1), kernels.L1Tier(0.28, 1, 1), kernels.L1Tier(0.17, 1, 1),
             kernels.L1Tier(0.1, 1, 1), kernels.L1Tier(0.05, 1, 1))
    sizes = kernels.tier_sizes(tiers, n_query)
    assert sum(sizes) == n_query and min(sizes) >= 0
    np.testing.assert_allclose(np.cumsum(sizes) / n_query, np.cumsum([0.4, 0.28, 0.17, 0.1, 0.05]),
                               atol=0.5 / n_query + 1e-9)


def test_tiers_give_the_queries_with_most_survivors_the_largest_capacities():
    # Half of the queries ranked by survivors take a small capacity, the other half a large one:
    # when the small one holds at least half of the queries' survivors, the two tiers certify
    # exactly the queries the large capacity alone does, and every certified answer is exact.
    rng = np.random.default_rng(7)
    x_train, x_query = _smooth_images(600, rng, noise=50), _smooth_images(40, rng, noise=50)
    x_train_j = jnp.asarray(x_train)
    pool4_t = kernels.pool_sums(x_train_j, 4).T
    codes2 = kernels.pool_sums(x_train_j, 2)
    r_exact = x_train_j.reshape(600, -1).astype(jnp.float32)

    def run(*tiers):
        return kernels.l1_chunk(jnp.asarray(x_query), r_exact, pool4_t, codes2, k=5, code_step=0, tiers=tiers)

    small, large = kernels.L1Tier(0.5, 48, 48), kernels.L1Tier(0.5, 600, 600)
    only_small, only_large, tiered = run(small._replace(share=1.0)), run(large._replace(share=1.0)), run(small, large)
    assert 20 <= int(only_small[2].sum()) < int(only_large[2].sum()) == 40   # the data makes the case
    np.testing.assert_array_equal(np.asarray(tiered[2]), np.asarray(only_large[2]))
    brute = exact.search(x_train, x_query, 5, "l1", method="brute")
    np.testing.assert_array_equal(np.asarray(tiered[1]), brute.indices)
    np.testing.assert_allclose(np.asarray(tiered[0]), brute.distances)


def test_compaction_through_blocks_equals_the_whole_row_compaction():
    rng = np.random.default_rng(4)
    n, block = 1000, kernels.COUNT_BLOCK
    bound = rng.random((6, n)).astype(np.float32)
    # Rows 0-3: survivors in at most 3 blocks; rows 4-5: spread over every block (overflow).
    for row, blocks in enumerate(([0], [2, 5], [15], [1, 7, 9])):
        for b in blocks:
            part = bound[row, b * block:(b + 1) * block]      # block 15 is the partial last one
            part -= 0.5 * (rng.random(part.size) < 0.4)
    threshold = np.array([0.0, 0.0, 0.0, 0.0, 0.05, 0.5], np.float32)
    b, th = jnp.asarray(bound), jnp.asarray(threshold)
    idx, valid, count, block_count = kernels._compact_in_blocks(b, th, kernels.block_minima(b), 3, 50)
    full_idx, full_valid, full_count = kernels._compact(b <= th[:, None], 50)
    block_count = np.asarray(block_count)
    assert block_count[:4].tolist() == [1, 2, 1, 3] and (block_count[4:] > 3).all()
    for row in range(4):    # within the block capacity: the same as compacting the whole row
        assert count[row] == full_count[row]
        np.testing.assert_array_equal(np.asarray(idx[row])[np.asarray(valid[row])],
                                      np.asarray(full_idx[row])[np.asarray(full_valid[row])])


def test_l1_block_path_is_exact_with_overflowing_blocks(monkeypatch, caplog):
    # Two blocks of 64 for the first pass and three for the first wider pass: on 700 points (11
    # blocks) most queries overflow them and go on to wider passes; every path must stay exact,
    # with indices and ties in the original numbering.
    monkeypatch.setattr(exact, "_L1_TIERS", (kernels.L1Tier(1.0, 2048, 512, 2),))
    monkeypatch.setattr(exact, "_L1_WIDE_PASSES", (((kernels.L1Tier(1.0, 8192, 2048, 3),), 32),
                                                   ((kernels.L1Tier(1.0, 16384, 4096),), 8)))
    rng = np.random.default_rng(5)
    x_train, x_query = _smooth_images(700, rng, noise=60), _smooth_images(60, rng, noise=60)
    x_train[350:] = x_train[:350]            # every point has an exact twin: ties everywhere
    with caplog.at_level("INFO", logger="fmnist_jax.knn.exact"):
        fast = exact.search(x_train, x_query, 6, "l1")
    assert "took a wider pruning pass" in caplog.text
    brute = exact.search(x_train, x_query, 6, "l1", method="brute")
    np.testing.assert_array_equal(fast.indices, brute.indices)
    np.testing.assert_array_equal(fast.distances, brute.distances)
