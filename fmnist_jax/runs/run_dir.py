"""A run's directory while one process trains it: its lock, config, checkpoints and metrics log.

    with RunDir.open(paths, record, overwrite=False) as run_dir:
        restored = run_dir.restore(abstract_state)      # the latest checkpoint, or a fresh start
        ...
        run_dir.record_epoch(row, epoch, state)         # metrics.jsonl row, then the checkpoint

`open` is the one place a run's folders are created, checked and locked: it refuses a run that
exists with another configuration (`files.check_resumable`), writes config.json, and holds the
run's lock (`lock.hold`) until the block ends, so a run has one writer from its first file to
its summary. What `record_epoch` writes is ordered so that a process killed at any moment
leaves a run that resumes bit-identically.

In a multi-host run every process opens the run dir (Orbax saves and restores from all of them)
and process 0 alone locks it and writes its files (`sharding.is_main_process`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from typing import Any, Iterator

from fmnist_jax.errors import RunInterrupted
from fmnist_jax.runs import checkpoint, lock, tensorboard
from fmnist_jax.runs.files import RunPaths, check_resumable, read_history, read_record, write_json, write_text
from fmnist_jax.training import sharding

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"      # results/<run>/tensorboard/: `tensorboard --logdir results/`

# The per-epoch values of a metrics row that TensorBoard shows (and, with several members, each member's).
SCALARS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_second", "seconds")


@dataclasses.dataclass
class Restored:
    """Where a run starts: its state (None: start fresh), the epochs done, an interrupted epoch's
    (steps done, metric sums) or None, and the history rows of the epochs done."""
    state: Any
    start_epoch: int
    resume: tuple[int, dict] | None
    history: list[dict]


@dataclasses.dataclass
class RunDir:
    """The folders of one run held by this process (see the module docstring); made by `open`."""
    paths: RunPaths
    checkpoints: checkpoint.RunCheckpoints
    events: tensorboard.EventWriter | None     # None in the processes that do not write (multi-host)

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (process 0 of a multi-host run, or the only one)."""
        return self.events is not None

    @property
    def metrics_file(self):
        return self.paths.results / METRICS_FILE

    @classmethod
    @contextlib.contextmanager
    def open(cls, paths: RunPaths, record: dict, *, overwrite: bool = False) -> Iterator["RunDir"]:
        """Locks the run, checks it may continue as `record` (config.json's content) says, or
        with `overwrite` clears it, writes config.json; yields the RunDir; unlocks at the end."""
        writes = sharding.is_main_process()
        with lock.hold(paths.checkpoints, paths.name) if writes else contextlib.nullcontext():
            if not overwrite and (paths.results / "config.json").exists() and paths.checkpoints.exists():
                check_resumable(read_record(paths), record, paths.name)
            out = paths.make_results() if writes else paths.results
            ckpts = checkpoint.RunCheckpoints(paths.checkpoints)
            try:
                if overwrite:
                    ckpts.remove_all()
                    if writes:
                        (out / METRICS_FILE).unlink(missing_ok=True)
                if writes:
                    write_json(out / "config.json", record)
                yield cls(paths, ckpts, tensorboard.EventWriter(out / TENSORBOARD_DIR) if writes else None)
            finally:
                ckpts.close()

    def restore(self, like: Any, steps_per_epoch: int) -> Restored:
        """The latest checkpoint that restores (against the abstract state `like`), with an
        interrupted epoch after it if there is one; the history is cut to the restored epoch."""
        start_epoch, state = self.checkpoints.restore_latest(like)
        start_epoch = start_epoch or 0
        resume = self.checkpoints.restore_interrupted(start_epoch, like)
        if resume is not None:
            steps_done, sums, state = resume
            resume = (steps_done, sums)
            log.info("resuming %s in epoch %d after step %d of %d", self.name, start_epoch + 1, steps_done,
                     steps_per_epoch)
        elif start_epoch:
            log.info("resuming %s from epoch %d", self.name, start_epoch)
        # Rows of epochs the restored state does not contain (killed between row and save) go.
        history = read_history(self.metrics_file, start_epoch)
        if self.writes:
            write_text(self.metrics_file, "".join(json.dumps(h) + "\n" for h in history))
        return Restored(state, start_epoch, resume, history)

    def record_epoch(self, row: dict, epoch: int, state: Any) -> None:
        """Appends the epoch's metrics row, then saves its checkpoint.

        The row goes first: killed before the save, the epoch is repeated and its row dropped on
        resume; the other order could lose the row of a saved epoch.
        """
        if self.writes:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.events.scalars(epoch, epoch_scalars(row))
        self.checkpoints.save(epoch, state)
        self.checkpoints.discard_interrupted()

    def save_interrupted(self, epoch: int, steps_done: int, sums: dict, state: Any) -> None:
        """Saves a mid-epoch state (see checkpoint.RunCheckpoints.save_interrupted)."""
        self.checkpoints.save_interrupted(epoch, steps_done, sums, state)

    def interrupted(self, stop, where: str) -> RunInterrupted:
        """The error that tells the person how the stopped run continues."""
        return RunInterrupted(f"run {self.name!r} stopped {where}, checkpoint saved; run the same command "
                              "again to resume.", getattr(stop, "signum", None) or 2)


def epoch_scalars(row: dict) -> dict[str, float]:
    """TensorBoard's scalars of a metrics row: the means, and member<i>/<name> with several members."""
    values = {name: row[name] for name in SCALARS if name in row}
    per_member = row.get("members", {})
    if len(per_member.get("train_accuracy", [])) > 1:
        for name, member_values in per_member.items():
            values |= {f"member{i}/{name}": v for i, v in enumerate(member_values)}
    return values
