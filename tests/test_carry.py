"""fmnist_jax.runs.carry: a stopped run packed into one folder and resumed from it elsewhere,
exactly as if it had never moved; a pack never goes backwards, and a swap cut short by a crash
leaves the old pack in place."""

import dataclasses

import pytest

from fmnist_jax.config import TrainConfig
from fmnist_jax.errors import RunError
from fmnist_jax.runs import carry, lock
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.training import train


def test_a_packed_member_resumes_on_another_machine_exactly_as_if_never_moved(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    cfg = TrainConfig(model="mlp", epochs=3, batch=30, val_fraction=0.25, augment=("flip",), seed=2, tta="none")

    def machine(name):
        return RunPaths("member", tmp_path / name / "results", tmp_path / name / "checkpoints")

    straight = train.train_and_evaluate(cfg, RunPaths("straight", tmp_path / "r", tmp_path / "c"), data_dir=directory)
    first = machine("first")
    train.train_and_evaluate(dataclasses.replace(cfg, epochs=2), first, data_dir=directory)
    pack = carry.pack(first, tmp_path / "in_flight")
    assert carry.packed_epoch(pack) == 2 and sorted(p.name for p in pack.iterdir()) == \
        ["checkpoint", "config.json", "metrics.jsonl"]
    second = machine("second")
    assert carry.unpack(tmp_path / "in_flight", second) == 2
    assert carry.unpack(tmp_path / "in_flight", second) is None          # nothing newer to bring
    resumed = train.train_and_evaluate(cfg, second, data_dir=directory)
    assert resumed["started_at_epoch"] == 2 and resumed["epochs"] == 3
    for key in ("best", "final"):
        assert resumed["test"][key]["member_loss"] == straight["test"][key]["member_loss"]
    # An older pack never replaces a newer one, in either direction.
    assert carry.pack(second, tmp_path / "in_flight") is not None
    assert carry.packed_epoch(tmp_path / "in_flight" / "member") == 3
    carry.pack(first, tmp_path / "in_flight")
    assert carry.packed_epoch(tmp_path / "in_flight" / "member") == 3


def test_a_pack_swap_cut_short_by_a_crash_restores_the_old_pack(tmp_path):
    # A crash between "old pack renamed away" and "new pack renamed in" leaves <run>.old and
    # <run>.partial: the next look at the pack brings the old one back.
    carry_dir = tmp_path / "in_flight"
    (carry_dir / "member.old" / carry.CHECKPOINT / "4").mkdir(parents=True)
    (carry_dir / "member.partial" / carry.CHECKPOINT).mkdir(parents=True)
    paths = RunPaths("member", tmp_path / "results", tmp_path / "checkpoints")
    assert carry.unpack(carry_dir, paths) == 4
    assert carry.packed_epoch(carry_dir / "member") == 4 and not (carry_dir / "member.old").exists()
    assert (paths.checkpoints / "4").is_dir()


def test_unpacking_into_a_run_that_another_process_trains_is_refused_and_touches_nothing(tmp_path):
    carry_dir = tmp_path / "in_flight"
    (carry_dir / "member" / carry.CHECKPOINT / "3").mkdir(parents=True)
    (carry_dir / "member" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    paths = RunPaths("member", tmp_path / "results", tmp_path / "checkpoints")
    with lock.hold(paths.checkpoints, paths.name):          # as a training process holds it
        with pytest.raises(RunError, match="is being trained by"):
            carry.unpack(carry_dir, paths)
    assert not (paths.checkpoints / "3").exists() and not paths.results.exists()
    assert carry.unpack(carry_dir, paths) == 3              # once it is free
