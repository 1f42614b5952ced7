"""Training: one-step smoke, overfitting, determinism, exact evaluation sums, NaN handling, hyper-parameters."""

import dataclasses

import jax
import numpy as np
import pytest

from fmnist_jax.config import TrainConfig
from fmnist_jax.errors import ConfigError
from fmnist_jax.training import loop, step
from tests.conftest import make_dataset, placed

TINY = TrainConfig(model="seed003", epochs=2, batch=32, augment=("flip", "erase"), seed=3)


def _placed(cfg=TINY, n_train=128, n_val=40, members=None):
    """A Trainer on a synthetic pool: the first n_train images train, the other n_val validate."""
    ds = make_dataset(n_train=n_train, n_test=n_val)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    return placed(cfg, x, y, np.arange(n_train), np.arange(n_train, n_train + n_val), members)


def _member(tree, i):
    return jax.tree.map(lambda v: v[i], tree)


def _leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_train_step_changes_params_and_counts():
    t = _placed()
    state = _member(loop.init(*t).train, 0)
    train_step = jax.jit(step.make_train_step(t.programs.model, TINY, t.setup.steps_per_epoch))
    new, metrics = train_step(state, t.setup.x[:32], t.setup.y[:32], jax.random.key(0))
    assert int(new.step) == 1 and int(metrics["count"]) == 32
    assert not _leaves_equal(new.params, state.params)
    assert not _leaves_equal(new.batch_stats, state.batch_stats)


def test_alternating_flips_follow_the_epoch_of_the_step():
    cfg = dataclasses.replace(TINY, augment=("alt_flip",))
    images = make_dataset(n_train=6).x_train
    index = jax.numpy.asarray([5, 9, 11, 2, 40, 7])
    key = step.image_key(jax.random.key(3))
    plain = np.asarray(images / 255.0, np.float32)[..., None]
    sides = []
    for i in range(9):                          # three steps per epoch: epochs 0, 0, 0, 1, 1, 1, 2, ...
        out = np.asarray(step.augment_batch(cfg, 3, jax.random.key(i), images, i, index, key))
        mirrored = np.array([np.array_equal(o, p[:, ::-1]) for o, p in zip(out, plain)])
        assert all(m or np.array_equal(o, p) for m, o, p in zip(mirrored, out, plain))
        sides.append(mirrored)
    sides = np.array(sides).reshape(3, 3, -1)      # [epoch, step in epoch, image]
    assert (sides == sides[:, :1]).all()           # within an epoch the same side
    assert (sides[1:, 0] != sides[:-1, 0]).all()   # the other side every epoch
    # The side depends on the pool index, not on the position in the batch.
    swapped = np.asarray(step.augment_batch(cfg, 3, jax.random.key(0), images[::-1], 0, index[::-1], key))
    np.testing.assert_array_equal(swapped[::-1], np.asarray(step.augment_batch(cfg, 3, jax.random.key(1), images,
                                                                                0, index, key)))


def test_tiny_overfit_loss_falls():
    cfg = dataclasses.replace(TINY, model="mlp", epochs=15, augment=(), lr=3e-3)
    t = _placed(cfg, n_train=64)
    losses = [r.train_loss[0] for r, _ in loop.epochs(*t, loop.init(*t))]
    assert losses[-1] < 0.3 * losses[0]


def test_same_seed_same_bits_other_seed_differs():
    finals = []
    for seed in (3, 3, 4):
        t = _placed(dataclasses.replace(TINY, seed=seed, epochs=1))
        *_, (result, state) = loop.epochs(*t, loop.init(*t))
        finals.append(state.train.params)
    assert _leaves_equal(finals[0], finals[1])
    assert not _leaves_equal(finals[0], finals[2])


def test_evaluation_is_exact_over_a_partial_last_batch():
    t = _placed(dataclasses.replace(TINY, eval_batch=16))   # 40 = 16 + 16 + 8
    stacked = step.variables_of(loop.init(*t).train)
    got = loop.validate(*t, stacked)
    x_val, y_val = t.setup.x[128:], t.setup.y[128:]
    logits = t.programs.model.apply(_member(stacked, 0), x_val, train=False)
    loss = step.cross_entropy(logits, y_val)
    assert got["loss"][0] == pytest.approx(float(loss.mean()), rel=1e-5)
    assert got["accuracy"][0] == pytest.approx(float((logits.argmax(-1) == y_val).mean()))
    np.testing.assert_allclose(t.programs.predict(stacked, x_val)[0], logits, rtol=1e-5, atol=1e-5)


def test_nan_loss_stops_with_a_clear_error():
    t = _placed(dataclasses.replace(TINY, model="mlp", optimizer="sgd", lr=1e30, augment=()))
    with pytest.raises(step.TrainingError, match="training loss became nan"):
        for _ in loop.epochs(*t, loop.init(*t)):
            pass


@pytest.mark.parametrize("changes, message", [
    (dict(batch=0), "batch must be at least 1"),
    (dict(model="vgg"), "model does not know 'vgg'"),
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(lr=-1.0), "lr must be positive"),
    (dict(weight_decay=-1e-4), "weight_decay must be at least 0"),
    (dict(erase_p=1.5), "erase_p must be in"),
    (dict(label_smoothing=1.0), "label_smoothing must be in"),
    (dict(augment=("blur",)), "augment does not know 'blur'"),
    (dict(momentum=1.0), "momentum must be in"),
    (dict(muon_aux_lr=0.0), "muon_aux_lr must be positive"),
])
def test_bad_configs_name_their_field(changes, message):
    with pytest.raises(ConfigError, match=message) as error:
        dataclasses.replace(TINY, **changes).validate()
    assert error.value.field == next(iter(changes))


def test_batch_larger_than_training_set():
    with pytest.raises(ValueError, match="larger than the training set"):
        _placed(dataclasses.replace(TINY, batch=500))


@pytest.mark.parametrize("optimizer, schedule", [("adamw", "cosine"), ("sgd", "onecycle"), ("adam", "constant")])
def test_optimizers_and_schedules_train(optimizer, schedule):
    cfg = dataclasses.replace(TINY, model="mlp", optimizer=optimizer, schedule=schedule, epochs=2,
                              weight_decay=1e-4, label_smoothing=0.1, warmup_epochs=0.5)
    t = _placed(cfg)
    results = [r for r, _ in loop.epochs(*t, loop.init(*t))]
    assert all(np.isfinite(r.train_loss[0]) for r in results)
    if schedule != "constant":
        assert results[0].lr != results[1].lr
    # The schedule reaches the same values with the peak as a traced value (per-member sweeps).
    schedule_fn = step.learning_rate_schedule(cfg, 10)
    traced = jax.jit(lambda i, peak: step.learning_rate_schedule(cfg, 10, peak)(i))
    for i in (0, 3, 7, 15):
        assert float(traced(i, cfg.lr)) == pytest.approx(float(schedule_fn(i)), rel=1e-6, abs=1e-12)


def test_segment_length_divides_the_epoch():
    assert step.segment_length(204) == 34          # 6 calls: divisors of 204 below 20.4 are too short
    assert step.segment_length(192) == 24
    assert step.segment_length(38) == 19
    assert step.segment_length(8) == 8 and step.segment_length(7) == 7 and step.segment_length(3) == 3
    for steps in range(1, 300):
        assert steps % step.segment_length(steps) == 0


def test_progress_reports_each_epoch_and_its_steps():
    t = _placed(dataclasses.replace(TINY, model="mlp", augment=()))
    calls = []
    for _ in loop.epochs(*t, loop.init(*t), progress=lambda epoch, done, total: calls.append((epoch, done, total))):
        pass
    assert {c[0] for c in calls} == {1, 2} and calls[0] == (1, 0, t.setup.steps_per_epoch)   # the epoch starts
    assert (1, t.setup.steps_per_epoch, t.setup.steps_per_epoch) in calls and (2, t.setup.steps_per_epoch, t.setup.steps_per_epoch) in calls


def test_val_every_validates_every_nth_and_the_last_epoch_and_picks_among_them():
    """Skipping validations changes neither training nor the scores of the epochs it keeps; the
    best epoch is the best of the validated ones."""
    cfg = TrainConfig(model="mlp", epochs=7, batch=32, augment=("flip",), lr=3e-3, seed=1)
    runs = {}
    for every in (1, 3):
        t = _placed(dataclasses.replace(cfg, val_every=every), n_train=96, n_val=40)
        results, state = zip(*loop.epochs(*t, loop.init(*t)))
        runs[every] = results, state[-1]
    (dense, dense_state), (sparse, sparse_state) = runs[1], runs[3]
    assert [r.epoch for r in sparse if r.validated] == [3, 6, 7]
    assert all("val_accuracy" not in r.as_dict() for r in sparse if not r.validated)
    assert _leaves_equal(dense_state.train.params, sparse_state.train.params)
    for d, s in zip(dense, sparse):
        assert d.train_loss == s.train_loss
        if s.validated:
            assert (d.val_accuracy, d.val_loss) == (s.val_accuracy, s.val_loss)
    best = max((3, 6, 7), key=lambda e: (dense[e - 1].val_accuracy[0], -e))       # the earliest of equals
    assert int(sparse_state.best_epoch[0]) == best
    assert float(sparse_state.best_val_accuracy[0]) == dense[best - 1].val_accuracy[0]


def test_val_every_must_be_positive():
    with pytest.raises(ConfigError, match="val_every"):
        dataclasses.replace(TINY, val_every=0).validate()
