"""Checkpoints: latest kept, resume of an ensemble equal to an uninterrupted run, crash safety, clear write errors."""

import jax
import numpy as np
import pytest

from fmnist_jax.config import TrainConfig
from fmnist_jax.runs import checkpoint
from fmnist_jax.training import loop, optim
from fmnist_jax.training import members as members_lib
from tests.conftest import make_dataset, placed


def _truncate_arrays(step_dir):
    """Damages a saved step the way a bad disk or a careless copy would: its array files cut short."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def test_the_latest_two_epochs_are_kept_and_a_damaged_latest_falls_back(tmp_path, caplog):
    like = {"w": np.zeros(3, np.float32)}
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    for epoch in (1, 2, 3):
        ckpts.save(epoch, {"w": np.full(3, epoch, np.float32)})
    assert ckpts.latest_epoch() == 3 and ckpts.epochs() == [2, 3]
    ckpts.close()
    reopened = checkpoint.RunCheckpoints(tmp_path / "run")
    epoch, state = reopened.restore_latest(like)
    assert epoch == 3 and state["w"].tolist() == [3, 3, 3]
    _truncate_arrays(tmp_path / "run" / "3")
    with caplog.at_level("WARNING"):
        epoch, state = reopened.restore_latest(like)
    assert epoch == 2 and state["w"].tolist() == [2, 2, 2]
    assert "could not restore epoch 3" in caplog.text and "continuing from epoch 2" in caplog.text
    assert reopened.epochs() == [2]            # the damaged step is gone: epoch 3 can be saved again
    _truncate_arrays(tmp_path / "run" / "2")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint .* can be restored.*overwrite"):
        reopened.restore_latest(like)
    reopened.close()


def test_interrupted_save_is_never_picked_up(tmp_path):
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    ckpts.save(1, {"w": np.ones(2)})
    ckpts.close()
    # What a crash in the middle of saving epoch 2 leaves behind: Orbax's temporary folder.
    partial = tmp_path / "run" / "2.orbax-checkpoint-tmp-1234"
    (partial / "default").mkdir(parents=True)
    reopened = checkpoint.RunCheckpoints(tmp_path / "run")
    assert reopened.latest_epoch() == 1 and reopened.epochs() == [1]


def test_a_failed_write_raises_a_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    ckpts.save(1, {"w": np.ones(2)})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", disk_full)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*untouched"):
        ckpts.save(2, {"w": np.ones(2)})
    monkeypatch.undo()
    assert ckpts.latest_epoch() == 1
    np.testing.assert_array_equal(ckpts.restore(1, {"w": np.zeros(2)})["w"], [1, 1])


def test_resumed_ensemble_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    ds = make_dataset(n_train=128, n_test=40)
    cfg = TrainConfig(model="seed003", epochs=2, batch=32, augment=("flip", "erase", "shift_zoom"),
                            seed=7, split="random", val_fraction=0.25, split_per_seed=True)
    members = members_lib.seed_members(7, 2)

    def make_run():
        train_idx, val_idx = members_lib.member_splits(ds.y_train, cfg, [7, 8])
        return placed(cfg, ds.x_train, ds.y_train, train_idx, val_idx, members)

    t = make_run()
    *_, (_, uninterrupted) = loop.epochs(*t, loop.init(*t))

    t = make_run()
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    for result, state in loop.epochs(*t, loop.init(*t)):
        ckpts.save(result.epoch, state)
        if result.epoch == 1:
            break                                          # "interrupted" after epoch 1
    ckpts.close()

    t = make_run()                                     # a new process would start here
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    start = ckpts.latest_epoch()
    state = ckpts.restore(start, t.setup.abstract_state())
    *_, (_, resumed) = loop.epochs(*t, state, start)
    # Everything: each member's latest state, its best variables, best accuracy and best epoch.
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_state_with_the_weights_ema_and_a_fixed_whitening_layer_round_trips(tmp_path):
    """What resume and restore.py do, for the speedrun options: the EMA lives in the optimizer state
    (its NamedTuple type must come back) and the whitening layer in the batch statistics."""
    ds = make_dataset(n_train=64, n_test=10)
    cfg = TrainConfig(model="speedrun", model_args={"widths": (32, 64, 128)}, epochs=1, batch=32, optimizer="sgd", ema_decay=0.9,
                            bias_lr_scale=4.0, augment=("alt_flip",))
    t = placed(cfg, ds.x_train, ds.y_train, np.arange(48), np.arange(48, 64))
    state = loop.init(*t)
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    ckpts.save(1, state)
    restored = ckpts.restore(1, t.setup.abstract_state())
    ckpts.close()
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert optim.ema_params(jax.tree.map(lambda v: v[0], restored.train.opt_state)) is not None
    assert "whiten" in restored.best["batch_stats"]
