"""Training: one-step smoke, overfitting, determinism, exact evaluation sums, NaN handling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax import train
from tests.conftest import make_dataset

TINY = train.TrainConfig(model="seed003", epochs=2, batch_size=32, augment=("flip", "erase"), seed=3)


def _trainer(cfg=TINY, n_train=128, n_val=40):
    ds = make_dataset(n_train=n_train, n_test=n_val)
    return train.Trainer(cfg, ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def _leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_one_train_step_changes_params_and_counts():
    t = _trainer()
    state = t.init()
    step = jax.jit(train.make_train_step(t.model, t.tx, train.build_augment(TINY)))
    new, metrics = step(state, t.x_train[:32], t.y_train[:32], jax.random.key(0))
    assert int(new.step) == 1 and int(metrics["count"]) == 32
    assert not _leaves_equal(new.params, state.params)
    assert not _leaves_equal(new.batch_stats, state.batch_stats)


def test_tiny_overfit_loss_falls():
    cfg = dataclasses.replace(TINY, model="mlp", epochs=15, augment=(), lr=3e-3)
    t = _trainer(cfg, n_train=64)
    losses = [r.train_loss for r, _ in t.epochs(t.init())]
    assert losses[-1] < 0.3 * losses[0]


def test_same_seed_same_bits_other_seed_differs():
    finals = []
    for seed in (3, 3, 4):
        t = _trainer(dataclasses.replace(TINY, seed=seed))
        *_, (result, state) = t.epochs(t.init())
        finals.append(state.params)
    assert _leaves_equal(finals[0], finals[1])
    assert not _leaves_equal(finals[0], finals[2])


def test_evaluation_is_exact_over_a_partial_last_batch():
    t = _trainer(dataclasses.replace(TINY, eval_batch_size=16))   # 40 = 16 + 16 + 8
    variables = train.variables_of(t.init())
    got = t.evaluate(variables, t.x_val, t.y_val)
    logits = t.model.apply(variables, t.x_val, train=False)
    loss = train.cross_entropy(logits, t.y_val)
    assert got["count"] == 40
    assert got["loss"] == pytest.approx(float(loss.mean()), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float((logits.argmax(-1) == t.y_val).mean()))


def test_nan_loss_stops_with_a_clear_error():
    t = _trainer(dataclasses.replace(TINY, model="mlp", optimizer="sgd", lr=1e30, augment=()))
    with pytest.raises(train.TrainingError, match="training loss became nan"):
        for _ in t.epochs(t.init()):
            pass


@pytest.mark.parametrize("changes, message", [
    (dict(batch_size=0), "batch size must be at least 1"),
    (dict(model="vgg"), "unknown model"),
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(lr=-1.0), "learning rate must be positive"),
    (dict(augment=("blur",)), "unknown augmentation"),
])
def test_bad_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **changes).validate()


def test_batch_larger_than_training_set():
    with pytest.raises(ValueError, match="larger than the training set"):
        _trainer(dataclasses.replace(TINY, batch_size=500))


@pytest.mark.parametrize("optimizer, schedule", [("adamw", "cosine"), ("sgd", "onecycle"), ("adam", "constant")])
def test_optimizers_and_schedules_train(optimizer, schedule):
    cfg = dataclasses.replace(TINY, model="mlp", optimizer=optimizer, schedule=schedule, epochs=2,
                              weight_decay=1e-4, label_smoothing=0.1, warmup_epochs=0.5)
    t = _trainer(cfg)
    results = [r for r, _ in t.epochs(t.init())]
    assert all(np.isfinite(r.train_loss) for r in results)
    if schedule != "constant":
        assert results[0].lr != results[1].lr


def test_segment_length_divides_the_epoch():
    assert train.segment_length(204) == 17
    assert train.segment_length(7) == 1
    assert 100 % train.segment_length(100) == 0


def test_vmapped_members_match_members_trained_alone():
    # Groundwork for ensembles: the training scan maps over a member axis of (state, loop key),
    # and each member equals the same member trained on its own, to float tolerance. SGD keeps
    # reassociation differences near float level (a ReLU at its kink can still move a unit by
    # ~1e-4); Adam's normalised step can turn the sign of a
    # near-zero gradient into a difference of the learning rate itself.
    t = _trainer(dataclasses.replace(TINY, augment=("flip", "erase"), optimizer="sgd", lr=0.05))
    run_steps = train.make_run_steps(train.make_train_step(t.model, t.tx, train.build_augment(t.cfg)))
    init_keys = jax.random.split(jax.random.key(0), 2)
    loop_keys = jax.random.split(jax.random.key(1), 2)
    idx = train.epoch_batches(t.keys.data, 0, len(t.y_train), t.cfg.batch_size)
    stacked = jax.vmap(lambda k: train.init_state(t.model, t.tx, k))(init_keys)
    together, _ = jax.jit(jax.vmap(run_steps, in_axes=(0, None, None, None, 0)))(
        stacked, t.x_train, t.y_train, idx, loop_keys)
    alone = [jax.jit(run_steps)(train.init_state(t.model, t.tx, init_keys[i]), t.x_train, t.y_train, idx,
                                loop_keys[i])[0] for i in range(2)]
    for i in range(2):
        for a, b in zip(jax.tree.leaves(jax.tree.map(lambda v: v[i], together.params)),
                        jax.tree.leaves(alone[i].params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    # Members with different keys differ by far more than that tolerance.
    gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(alone[0].params), jax.tree.leaves(alone[1].params)))
    assert gap > 1e-2


def test_progress_reports_each_epoch_and_its_steps():
    t = _trainer(dataclasses.replace(TINY, model="mlp", augment=()))
    calls = []
    for _ in t.epochs(t.init(), progress=lambda epoch, done, total: calls.append((epoch, done, total))):
        pass
    assert {c[0] for c in calls} == {1, 2}
    assert (1, t.steps_per_epoch, t.steps_per_epoch) in calls and (2, t.steps_per_epoch, t.steps_per_epoch) in calls
