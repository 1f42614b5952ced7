"""The member axis: independence of members, a member equal to the same seed trained alone,
per-member splits and hyper-parameters, best-by-validation bookkeeping, ensemble scoring."""

import dataclasses

import jax
import numpy as np
import pytest

from fmnist_jax.config import TrainConfig
from fmnist_jax.evaluation import ensemble
from fmnist_jax.models import layers
from fmnist_jax.training import loop, step
from fmnist_jax.training import members as members_lib
from tests.conftest import make_dataset, placed

# SGD keeps the difference between a vmapped member and the same member alone near float
# rounding (reassociation inside batched matmuls; a ReLU at its kink can still move a unit by
# ~1e-4). Adam's normalised step turns the sign of a near-zero gradient into a difference of
# the learning rate itself, which says nothing about vmapping.
SGD = TrainConfig(model="seed003", epochs=1, batch=32, augment=("flip", "erase"),
                        optimizer="sgd", lr=0.05, split="random", val_fraction=0.25)
DS = make_dataset(n_train=160, n_test=40)
# The hyper-parameter tests check the member machinery, not the network: the mlp compiles fast.
MLP_SGD = dataclasses.replace(SGD, model="mlp")


def _placed(cfg, members, per_seed=False):
    cfg = dataclasses.replace(cfg, split_per_seed=per_seed)
    train_idx, val_idx = members_lib.member_splits(DS.y_train, cfg, [m.seed for m in members])
    return placed(cfg, DS.x_train, DS.y_train, train_idx, val_idx, members)


def _final(t):
    *_, (_, state) = loop.epochs(*t, loop.init(*t))
    return state


def _member(tree, i):
    return jax.tree.map(lambda v: np.asarray(v[i]), tree)


def _assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-4)


def _max_gap(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def two_members():
    """Members with seeds 3 and 4, each on its own split, trained one after another ("map", the
    CPU default): the reference both tests below compare with (one compiled run, shared)."""
    t = _placed(SGD, members_lib.seed_members(3, 2), per_seed=True)
    assert t.setup.execution == t.setup.execution_label == "map"    # auto: several members on one CPU
    return _final(t)


def test_a_member_equals_the_same_seed_trained_alone_and_members_differ(two_members):
    single = _placed(SGD, [members_lib.Member(4)], per_seed=True)
    assert single.setup.execution_label == "unbatched (one member)"
    alone = _final(single)
    _assert_close(_member(two_members.train.params, 1), _member(alone.train.params, 0))
    _assert_close(_member(two_members.train.batch_stats, 1), _member(alone.train.batch_stats, 0))
    # Members with different keys differ by far more than that tolerance.
    assert _max_gap(_member(two_members.train.params, 0), _member(two_members.train.params, 1)) > 1e-2


def test_members_run_one_after_another_equal_vmapped_members(two_members):
    vmapped = _placed(dataclasses.replace(SGD, member_execution="vmap"), members_lib.seed_members(3, 2), per_seed=True)
    assert vmapped.setup.execution == "vmap"
    _assert_close(two_members.train.params, _final(vmapped).train.params)
    train_idx, val_idx = members_lib.member_splits(DS.y_train, SGD, [3, 4])
    with pytest.raises(ValueError, match="member_execution does not know 'pmap'"):
        placed(dataclasses.replace(SGD, member_execution="pmap"), DS.x_train, DS.y_train,
                        train_idx, val_idx, members_lib.seed_members(3, 2))


@pytest.mark.parametrize("execution", ["vmap", "map"])
def test_a_single_member_is_traced_unbatched(execution):
    seen = []

    def per_member(w, x):
        seen.append((type(w).__name__, w.shape))
        return {"y": x @ w, "n": w.sum()}

    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    run = jax.jit(members_lib.over_members(per_member, (0, None), execution))
    one = run(np.ones((1, 3, 4), np.float32), x)
    assert seen[-1][1] == (3, 4)                       # squeezed, not a [1, 3, 4] batch
    assert "Batch" not in seen[-1][0]                  # and not under vmap's batching tracer
    assert one["y"].shape == (1, 2, 4) and one["n"].shape == (1,)
    np.testing.assert_allclose(one["y"][0], x @ np.ones((3, 4)))
    ws = np.random.default_rng(0).standard_normal((3, 3, 4)).astype(np.float32)
    several = run(ws, x)
    assert several["y"].shape == (3, 2, 4)
    np.testing.assert_allclose(several["y"], np.einsum("nk,mko->mno", x, ws), rtol=1e-5)


def test_a_sweep_member_equals_a_run_with_its_hyper_parameters():
    changed = dict(lr=0.02, weight_decay=1e-3, dropout_scale=0.0, erase_p=1.0, label_smoothing=0.1)
    swept = _final(_placed(MLP_SGD, [members_lib.Member(5), members_lib.Member(5, changed)]))
    alone = _final(_placed(dataclasses.replace(MLP_SGD, **changed), [members_lib.Member(5)]))
    _assert_close(_member(swept.train.params, 1), _member(alone.train.params, 0))
    # Same seed, same data order: only the hyper-parameters make member 0 differ from member 1.
    assert _max_gap(_member(swept.train.params, 0), _member(swept.train.params, 1)) > 1e-2


@pytest.mark.parametrize("name, value", [("lr", 0.2), ("weight_decay", 0.5), ("dropout_scale", 0.0),
                                         ("erase_p", 0.0), ("label_smoothing", 0.3)])
def test_each_hyper_parameter_reaches_the_step(name, value):
    state = _final(_placed(MLP_SGD, [members_lib.Member(5), members_lib.Member(5, {name: value})]))
    assert float(state.train.hparams.__getattribute__(name)[1]) == pytest.approx(value)
    assert _max_gap(_member(state.train.params, 0), _member(state.train.params, 1)) > 1e-4


def test_unknown_or_bad_hyper_parameters_are_refused():
    with pytest.raises(ValueError, match="momentum is not a hyper-parameter a member can override"):
        _placed(SGD, [members_lib.Member(0, {"momentum": 0.5})])
    with pytest.raises(ValueError, match="lr must be positive"):
        _placed(SGD, [members_lib.Member(0, {"lr": 0.0})])


def test_per_seed_splits_differ_and_partition_the_pool():
    cfg = dataclasses.replace(SGD, split="stratified", split_per_seed=True)
    train_idx, val_idx = members_lib.member_splits(DS.y_train, cfg, [0, 1, 2])
    assert train_idx.shape[0] == val_idx.shape[0] == 3 and train_idx.shape[1] + val_idx.shape[1] == 160
    for t, v in zip(train_idx, val_idx):
        assert sorted(np.concatenate([t, v]).tolist()) == list(range(160))
    assert not np.array_equal(np.sort(val_idx[0]), np.sort(val_idx[1]))
    shared_train, shared_val = members_lib.member_splits(DS.y_train, dataclasses.replace(cfg, split_per_seed=False),
                                                     [0, 1, 2])
    assert all(np.array_equal(shared_val[0], v) for v in shared_val)
    with pytest.raises(ValueError, match="cannot be split per seed"):
        dataclasses.replace(cfg, split="ordered").validate()


def test_each_member_keeps_the_variables_of_its_best_validation_epoch():
    cfg = dataclasses.replace(SGD, epochs=4, optimizer="adam", lr=3e-3)
    t = _placed(cfg, members_lib.seed_members(0, 2), per_seed=True)
    snapshots, accuracies = [], []
    for result, state in loop.epochs(*t, loop.init(*t)):
        snapshots.append(jax.device_get(step.variables_of(state.train)))
        accuracies.append(result.val_accuracy)
    accuracies = np.array(accuracies)                       # [epochs, members]
    for m in range(2):
        best = int(np.argmax(accuracies[:, m]))             # the earliest of equal maxima
        assert int(state.best_epoch[m]) == best + 1
        assert float(state.best_val_accuracy[m]) == pytest.approx(accuracies[best, m])
        for a, b in zip(jax.tree.leaves(_member(state.best, m)), jax.tree.leaves(_member(snapshots[best], m))):
            np.testing.assert_array_equal(a, b)
    # The best variables score on the validation split exactly what was recorded.
    np.testing.assert_allclose(loop.validate(*t, state.best)["accuracy"], np.asarray(state.best_val_accuracy))


def test_dropout_keeps_the_expectation_and_scales_with_a_traced_value():
    x = np.ones((200, 500), np.float32)
    layer = layers.Dropout(0.3)

    @jax.jit
    def apply(scale, key):
        return layer.apply({}, x, scale, rngs={"dropout": key})

    y = np.asarray(apply(1.0, jax.random.key(0)))
    kept = (y != 0).mean()
    assert abs(kept - 0.7) < 4 * np.sqrt(0.21 / y.size)        # 4 sigma
    assert abs(y.mean() - 1.0) < 0.01                          # inverted dropout: unbiased
    assert (np.asarray(apply(0.0, jax.random.key(0))) == 1).all()   # scale 0: no dropout
    half = (np.asarray(apply(0.5, jax.random.key(1))) != 0).mean()
    assert abs(half - 0.85) < 4 * np.sqrt(0.85 * 0.15 / y.size)
    assert (np.asarray(layers.Dropout(0.3, deterministic=True).apply({}, x)) == 1).all()


def test_ensemble_scores_members_mean_std_and_soft_vote():
    labels = np.array([0, 1, 2, 0])
    # Three members; the vote is right where two members are confident and one is not.
    logits = np.log(np.array([
        [[.8, .1, .1], [.1, .8, .1], [.1, .1, .8], [.1, .8, .1]],
        [[.8, .1, .1], [.6, .3, .1], [.1, .1, .8], [.8, .1, .1]],
        [[.1, .8, .1], [.1, .8, .1], [.1, .8, .1], [.8, .1, .1]],
    ]))
    scores = ensemble.score(ensemble.member_probabilities(logits), labels)
    np.testing.assert_allclose(scores["member_accuracy"], [0.75, 0.75, 0.5])
    assert scores["mean_accuracy"] == pytest.approx(2 / 3)
    assert scores["std_accuracy"] == pytest.approx(np.std([0.75, 0.75, 0.5], ddof=1))
    assert scores["ensemble_accuracy"] == 1.0
    flipped = ensemble.mean_probabilities([logits, logits[:, :, ::-1]])
    np.testing.assert_allclose(flipped.sum(-1), 1.0)


def test_an_epoch_of_several_passes_shows_every_image_that_many_times_in_fresh_orders():
    key = jax.random.key(3)
    one = np.asarray(step.epoch_batches(key, 2, 40, 8))
    np.testing.assert_array_equal(one.ravel(), np.asarray(jax.random.permutation(jax.random.fold_in(key, 2), 40)))
    three = np.asarray(step.epoch_batches(key, 2, 40, 8, passes=3))
    assert three.shape == (15, 8)
    np.testing.assert_array_equal(three.ravel()[:40], one.ravel())          # the first pass is the 1-pass epoch
    passes = three.ravel().reshape(3, 40)
    assert all(sorted(p.tolist()) == list(range(40)) for p in passes)
    assert not np.array_equal(passes[0], passes[1]) and not np.array_equal(passes[1], passes[2])
    # Batches run across the seams between passes; the remainder of the whole epoch is dropped.
    assert step.epoch_batches(key, 0, 10, 4, passes=3).shape == (7, 4)


def test_a_trainer_with_two_passes_takes_twice_the_steps_of_an_epoch():
    cfg = dataclasses.replace(MLP_SGD, augment=(), epoch_passes=2)
    t = _placed(cfg, [members_lib.Member(0)])
    assert t.setup.steps_per_epoch == 2 * t.setup.n_train // cfg.batch == 7          # 240 images, batch 32
    state = loop.init(*t)
    state, record, _ = loop.train_epoch(*t, state, 0)
    assert int(state.train.step[0]) == t.setup.steps_per_epoch
    with pytest.raises(ValueError, match="epoch_passes must be at least 1"):
        dataclasses.replace(cfg, epoch_passes=0).validate()
