"""The options the earlier projects' protocols need (issue 20): best epoch by validation loss,
Keras-style L2 on marked kernels, Adam's epsilon, fixed augmented copies and a shared data seed."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax import presets
from fmnist_jax.config import TrainConfig
from fmnist_jax.data import pools
from fmnist_jax.training import loop, step, train
from tests.conftest import make_dataset, placed, write_dataset

DS = make_dataset(n_train=160, n_test=40)
MLP = TrainConfig(model="mlp", epochs=4, batch=32, augment=("flip",), optimizer="adam", lr=3e-3, split="random",
                  val_fraction=0.25)


def _split(n=160, n_val=40):
    return np.arange(n - n_val), np.arange(n - n_val, n)


@pytest.mark.parametrize("select", ["val_loss", "val_accuracy"])
def test_each_member_keeps_its_best_epoch_by_the_selected_metric(select):
    t = placed(dataclasses.replace(MLP, select=select), DS.x_train, DS.y_train, *_split())
    losses, accuracies, snapshots = [], [], []
    for result, state in loop.epochs(*t, loop.init(*t)):
        losses.append(result.val_loss[0])
        accuracies.append(result.val_accuracy[0])
        snapshots.append(jax.device_get(step.variables_of(state.train)))
    best = int(np.argmin(losses) if select == "val_loss" else np.argmax(accuracies))   # the earliest of equals
    assert int(state.best_epoch[0]) == best + 1
    assert float(state.best_val_loss[0]) == pytest.approx(losses[best])
    assert float(state.best_val_accuracy[0]) == pytest.approx(accuracies[best])
    for a, b in zip(jax.tree.leaves(state.best), jax.tree.leaves(snapshots[best])):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])


def _seed004(l2):
    cfg = TrainConfig(model="seed004_cnn", epochs=1, batch=16, optimizer="sgd", momentum=0.0, lr=0.1, l2=l2,
                      augment=(), dropout_scale=0.0, split="random", val_fraction=0.25)
    return placed(cfg, DS.x_train[:80], DS.y_train[:80], np.arange(48), np.arange(48, 80))


def test_l2_penalises_the_marked_kernels_in_the_step_and_the_validation_loss():
    plain, regularized = _seed004(0.0), _seed004(0.01)
    state = loop.init(*plain)
    params = jax.tree.map(lambda v: v[0], state.train.params)
    penalty = float(step.l2_penalty(regularized.programs.model, params))
    manual = sum(float(jnp.sum(params[name]["kernel"] ** 2)) for name in ("dense1", "dense2"))
    assert penalty == pytest.approx(manual, rel=1e-5)
    # Validation loss: the plain one plus the penalty of the variables validated.
    variables = step.variables_of(state.train)
    gap = loop.validate(*regularized, variables)["loss"] - loop.validate(*plain, variables)["loss"]
    assert float(gap[0]) == pytest.approx(0.01 * manual, rel=1e-4)
    # One SGD step (momentum 0): the penalty's gradient 2 * l2 * W moves the marked kernels only.
    one = jax.tree.map(lambda v: v[0], state.train)
    x, y = plain.setup.x[:16], plain.setup.y[:16]
    after = {}
    for name, t in (("plain", plain), ("l2", regularized)):
        train_step = jax.jit(step.make_train_step(t.programs.model, t.setup.cfg, t.setup.steps_per_epoch))
        after[name] = train_step(one, x, y, jax.random.key(0))[0].params
    for path, p0 in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = tuple(k.key for k in path)
        moved = _leaf(after["l2"], names) - _leaf(after["plain"], names)
        want = -0.1 * 2 * 0.01 * p0 if names[0] in ("dense1", "dense2") and names[-1] == "kernel" else 0.0 * p0
        np.testing.assert_allclose(moved, want, atol=2e-6)


def _leaf(tree, names):
    for n in names:
        tree = tree[n]
    return np.asarray(tree)


def test_adam_epsilon_reaches_the_optimizer():
    grads = {"w": jnp.full((3,), 1e-8)}
    updates = {}
    for eps in (1e-8, 1e-7):
        tx = step.make_optimizer(dataclasses.replace(MLP, adam_eps=eps), 10)
        updates[eps] = float(tx.update(grads, tx.init(grads), grads)[0]["w"][0])
    # Adam's first step is -lr * g / (|g| + eps): 1e-3 * 1/2 against 1e-3 * 1/11.
    assert updates[1e-8] == pytest.approx(-3e-3 / 2, rel=1e-3) and updates[1e-7] == pytest.approx(-3e-3 / 11, rel=1e-3)


def test_fixed_copies_are_made_once_from_the_key_and_keep_the_originals():
    images = DS.x_train[:50]
    key = pools.copies_key(3)
    pool = pools.augmented_pool(images, 2, ("rotate", "flip"), key, chunk=16)
    assert pool.shape == (150, 28, 28) and pool.dtype == np.float32
    np.testing.assert_array_equal(pool[:50], images / np.float32(255.0))
    np.testing.assert_array_equal(pool, pools.augmented_pool(images, 2, ("rotate", "flip"), key, chunk=7))
    assert not np.array_equal(pool[50:100], pool[100:150])          # two different copies of each image
    assert np.mean([not np.array_equal(pool[i], pool[50 + i]) for i in range(50)]) > 0.6
    assert not np.array_equal(pool, pools.augmented_pool(images, 2, ("rotate", "flip"), pools.copies_key(4)))
    np.testing.assert_array_equal(pools.pooled_labels(DS.y_train[:50], 2)[100:], DS.y_train[:50])
    with pytest.raises(ValueError, match="depends on the epoch"):
        pools.augmented_pool(images, 1, ("alt_flip",), key)


def test_copies_of_the_training_split_leave_validation_unaugmented():
    train_idx, val_idx = np.arange(10, 50), np.arange(10)
    x, y, new_train, new_val = pools.pool_training_split(DS.x_train[:50], DS.y_train[:50], train_idx, val_idx, 2,
                                                         ("flip", "erase"), pools.copies_key(0))
    assert len(x) == 50 + 80 and len(new_train) == 120 and new_val.tolist() == val_idx.tolist()
    np.testing.assert_array_equal(x[new_val], DS.x_train[:10] / np.float32(255.0))
    np.testing.assert_array_equal(y[new_train], np.tile(DS.y_train[10:50], 3))


def test_a_run_with_copies_before_the_split_trains_on_the_pool_and_shares_its_data_seed(tmp_path):
    write_dataset(tmp_path / "idx", DS)
    cfg = TrainConfig(model="mlp", epochs=1, batch=32, augment=(), fixed_copies=2, copy_augment=("rotate", "flip"),
                      copies_before_split=True, data_seed=42, val_fraction=0.2, split="random", seed=0)
    a, _ = train.place(cfg, None, tmp_path / "idx")
    b, _ = train.place(dataclasses.replace(cfg, seed=1), None, tmp_path / "idx")
    assert a.n_train == 384 and a.n_val == 96 and a.x.shape == (480, 28, 28)      # 0.8 and 0.2 of 3 x 160
    # Members trained as separate runs (other seeds) share the pool and the split.
    np.testing.assert_array_equal(a.train_idx, b.train_idx)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
    assert not np.array_equal(jax.random.key_data(a.init_keys), jax.random.key_data(b.init_keys))
    # Copies of one image may validate while its original trains (seed 003's protocol).
    origin = np.asarray(a.train_idx)[0] % 160, a.val_idx[0] % 160
    assert np.intersect1d(*origin).size > 0


@pytest.mark.parametrize("name", ["seed002", "seed003", "seed004_cnn", "seed004_resnet"])
def test_the_earlier_projects_presets_are_their_code_s_protocols(name):
    cfg = presets.get(name)
    cfg.validate()
    expected = {"seed002": dict(batch=250, epochs=100, fixed_copies=2, copies_before_split=False, adam_eps=1e-7,
                                select="val_accuracy", erase_fill="rectangle", split="random", val_fraction=0.15),
                "seed003": dict(batch=250, epochs=80, fixed_copies=2, copies_before_split=True, data_seed=42,
                                select="val_loss", copy_augment=("rotate", "flip"), val_fraction=0.2),
                "seed004_cnn": dict(batch=256, epochs=50, l2=0.01, select="val_loss", adam_eps=1e-7,
                                    augment=("vshift", "flip", "brightness", "erase"), erase_area=(0.02, 0.1)),
                "seed004_resnet": dict(batch=100, epochs=10, l2=1e-4, augment=(), adam_eps=1e-7)}[name]
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert presets.scored(name) == ("final" if name == "seed004_resnet" else "best")
