"""Checkpoints: best + latest semantics, resume equality, crash safety, clear write errors."""

import dataclasses

import jax
import numpy as np
import pytest

from fmnist_jax import checkpoint, train
from tests.conftest import make_dataset


def test_best_and_latest_are_both_kept(tmp_path):
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    for epoch, acc in ((1, 0.5), (2, 0.7), (3, 0.6)):
        ckpts.save(epoch, {"w": np.full(3, epoch, np.float32)}, acc)
    assert ckpts.best_epoch() == 2 and ckpts.latest_epoch() == 3
    assert ckpts.epochs() == [2, 3]                      # epoch 1 is neither: deleted
    ckpts.close()
    reopened = checkpoint.RunCheckpoints(tmp_path / "run")   # metrics survive a restart
    assert reopened.best_epoch() == 2 and reopened.latest_epoch() == 3
    reopened.save(4, {"w": np.full(3, 4, np.float32)}, 0.7)   # a tie keeps the earlier best
    assert reopened.best_epoch() == 2 and reopened.epochs() == [2, 4]
    restored = reopened.restore(2, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(restored["w"], [2, 2, 2])


def test_interrupted_save_is_never_picked_up(tmp_path):
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    ckpts.save(1, {"w": np.ones(2)}, 0.5)
    ckpts.close()
    # What a crash in the middle of saving epoch 2 leaves behind: Orbax's temporary folder.
    partial = tmp_path / "run" / "2.orbax-checkpoint-tmp-1234"
    (partial / "default").mkdir(parents=True)
    reopened = checkpoint.RunCheckpoints(tmp_path / "run")
    assert reopened.latest_epoch() == 1 and reopened.epochs() == [1]


def test_a_failed_write_raises_a_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    ckpts.save(1, {"w": np.ones(2)}, 0.5)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", disk_full)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*untouched"):
        ckpts.save(2, {"w": np.ones(2)}, 0.6)
    monkeypatch.undo()
    assert ckpts.latest_epoch() == 1
    np.testing.assert_array_equal(ckpts.restore(1, {"w": np.zeros(2)})["w"], [1, 1])


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    ds = make_dataset(n_train=128, n_test=40)
    cfg = train.TrainConfig(model="seed003", epochs=3, batch_size=32, augment=("flip", "erase", "shift_zoom"),
                            seed=7)

    def trainer():
        return train.Trainer(cfg, ds.x_train, ds.y_train, ds.x_test, ds.y_test)

    t = trainer()
    *_, (_, uninterrupted) = t.epochs(t.init())

    t = trainer()
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    for result, state in t.epochs(t.init()):
        ckpts.save(result.epoch, state, result.val_accuracy)
        if result.epoch == 1:
            break                                          # "interrupted" after epoch 1
    ckpts.close()

    t = trainer()                                          # a new process would start here
    ckpts = checkpoint.RunCheckpoints(tmp_path / "run")
    start = ckpts.latest_epoch()
    state = ckpts.restore(start, t.init())
    *_, (_, resumed) = t.epochs(state, start)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
