"""Runs that cannot be lost or mixed up: one writer per run (two real processes), mid-epoch
interruption by a real SIGTERM resuming bit-identical, a damaged latest checkpoint falling back,
a full disk leaving the previous checkpoint restorable."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import cli, cnn
from fmnist_jax import config
from fmnist_jax.errors import RunInterrupted
from fmnist_jax.runs import checkpoint
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.training import train
from tests.conftest import assert_exits_with_sentence

# 90 training images in batches of 3: 30 steps per epoch in 3 jitted calls of 10, so there are
# step boundaries inside every epoch to be interrupted at.
FLAGS = ["--noprogress", "--model=mlp", "--batch=3", "--val_fraction=0.25", "--split=stratified", "--augment=flip,erase"]


def _rows(results, name):
    return [json.loads(line) for line in (results / name / "metrics.jsonl").read_text().splitlines()]


def _same_training(a, b):
    """Two histories agree bit for bit in everything but timing."""
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows]
    assert strip(a) == strip(b)


def test_a_run_stopped_mid_epoch_resumes_bit_identical(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    cfg = config.TrainConfig(model="mlp", epochs=3, batch=3, val_fraction=0.25, split="stratified", seed=2)
    where = dict(results_dir=tmp_path / "results", checkpoint_dir=tmp_path / "checkpoints")
    straight = train.train_and_evaluate(cfg, RunPaths("straight", **where), data_dir=directory)
    calls = []

    def stop_in_epoch_two():   # asked before each later call of an epoch and after each epoch
        calls.append(1)
        return len(calls) == 4   # epoch 1: two calls + its end; then before epoch 2's second call

    stopped = RunPaths("stopped", **where)
    with pytest.raises(RunInterrupted, match="stopped in epoch 2 after step 10 of 30"):
        train.train_and_evaluate(cfg, stopped, data_dir=directory, stop=stop_in_epoch_two)
    progress = json.loads((stopped.checkpoints / "interrupted" / "progress.json").read_text())
    assert progress["epoch"] == 1 and progress["steps_done"] == 10
    resumed = train.train_and_evaluate(cfg, stopped, data_dir=directory)
    assert not (stopped.checkpoints / "interrupted").exists()
    _same_training(_rows(where["results_dir"], "stopped"), _rows(where["results_dir"], "straight"))
    assert resumed["test"] == straight["test"]


def _start(dirs, name, epochs):
    return subprocess.Popen([sys.executable, "-m", "experiments.cnn", *FLAGS, *dirs, f"--epochs={epochs}",
                             f"--run_name={name}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(results, name, n, process):
    path = results / name / "metrics.jsonl"
    deadline = time.time() + 120
    while not (path.exists() and len(path.read_text().splitlines()) >= n):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.02)


def test_one_writer_per_run_and_sigterm_resumes_bit_identical(dirs, tmp_path, capsys):
    # The processes to be signalled are asked for far more epochs than they get to train, so they
    # are still running whatever the machine's speed; the learning rate is constant, so the
    # number of epochs asked for changes nothing of the epochs trained, and the run is finished
    # (and compared) at a few epochs past where the signals stopped it.
    results, endless = tmp_path / "results", 1000
    first = _start(dirs, "shared", endless)
    _wait_for_epochs(results, "shared", 1, first)
    # A second process on the same run stops at once, naming the holder, and changes nothing.
    before = (results / "shared" / "config.json").read_text()
    assert_exits_with_sentence(capsys, f"run 'shared' is being trained by process {first.pid}",
                               cli.invoke, cnn, [*FLAGS, *dirs, "--epochs=5", "--run_name=shared"])
    assert (results / "shared" / "config.json").read_text() == before
    # A real SIGTERM: the current call finishes, a checkpoint is saved, the process says so.
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "stopped" in err and "run the same command again to resume" in err
    # Two signals at once: the process quits immediately; nothing on disk is damaged.
    second = _start(dirs, "shared", endless)
    _wait_for_epochs(results, "shared", len(_rows(results, "shared")) + 1, second)
    second.send_signal(signal.SIGTERM)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM
    # The dead processes' locks do not block; the run finishes exactly as an uninterrupted one.
    epochs = len(_rows(results, "shared")) + 2
    cli.invoke(cnn, [*FLAGS, *dirs, f"--epochs={epochs}", "--run_name=shared"])
    cli.invoke(cnn, [*FLAGS, *dirs, f"--epochs={epochs}", "--run_name=straight"])
    _same_training(_rows(results, "shared"), _rows(results, "straight"))


def test_a_damaged_latest_checkpoint_falls_back_and_still_ends_bit_identical(dirs, tmp_path, caplog):
    from tests.test_checkpoint import _truncate_arrays
    results, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    cli.invoke(cnn, [*FLAGS, *dirs, "--epochs=3", "--run_name=damaged"])
    _truncate_arrays(checkpoints / "damaged" / "3")
    # Rerun with one more epoch: epoch 3 cannot be restored, so it is trained again from epoch 2.
    # (A constant learning rate: the number of epochs does not change the first ones.)
    cli.invoke(cnn, [*FLAGS, *dirs, "--epochs=4", "--run_name=damaged"])
    assert "could not restore epoch 3" in caplog.text and "continuing from epoch 2" in caplog.text
    cli.invoke(cnn, [*FLAGS, *dirs, "--epochs=4", "--run_name=straight"])
    assert [r["epoch"] for r in _rows(results, "damaged")] == [1, 2, 3, 4]
    _same_training(_rows(results, "damaged"), _rows(results, "straight"))


def test_a_full_disk_is_one_sentence_and_the_previous_checkpoint_restores(dirs, tmp_path, capsys, monkeypatch):
    save = checkpoint.RunCheckpoints.save

    def disk_full_at_epoch_two(self, epoch, state):
        if epoch == 2:
            return checkpoint._save(_FailingManager(), epoch, state, f"the checkpoint of epoch {epoch}")
        return save(self, epoch, state)

    monkeypatch.setattr(checkpoint.RunCheckpoints, "save", disk_full_at_epoch_two)
    assert_exits_with_sentence(capsys, "No space left on device", cli.invoke, cnn,
                               [*FLAGS, *dirs, "--epochs=3", "--run_name=full"])
    monkeypatch.undo()
    ckpts = checkpoint.RunCheckpoints(tmp_path / "checkpoints" / "full")
    assert ckpts.epochs() == [1]
    ckpts.close()
    cli.invoke(cnn, [*FLAGS, *dirs, "--epochs=3", "--run_name=full"])     # and it resumes from there
    assert [r["epoch"] for r in _rows(tmp_path / "results", "full")] == [1, 2, 3]


class _FailingManager:
    def save(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
