"""Orbax checkpoints of a run: the latest two epochs' run states, and a mid-epoch one on interruption.

One CheckpointManager per run directory, steps numbered by epoch, the newest two kept: when the
latest cannot be restored (a damaged file), `restore_latest` says so and falls back to the one
before. The saved pytree is `programs.RunState`: the latest training state of every member and,
per member, the variables of its best validation epoch, so each ensemble member has its own best
and a resumed run the exact best-so-far of each. Orbax writes each step to a temporary folder and
renames it when complete, and deletes old steps only after that, so a crash or a full disk during
a save never loses the last good checkpoint.

An interrupted epoch (SIGTERM, Ctrl-C) is saved in `interrupted/`: the run state after the last
finished jitted call, plus `progress.json` (which epoch, how many of its steps, and the metric sums
so far), enough to finish the epoch exactly as if never stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fmnist_jax.errors import UserError

log = logging.getLogger(__name__)


class CheckpointError(UserError):
    """A checkpoint could not be written or read; the message names the folder and the cause."""


class RunCheckpoints:
    """The checkpoints of one run in `directory` (created if missing)."""

    KEEP = 2

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).absolute()
        self.manager = self._manager(self.directory, self.KEEP)

    @staticmethod
    def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True, create=True)
        try:
            return ocp.CheckpointManager(directory, options=options)
        except OSError as e:
            raise CheckpointError(f"cannot use the checkpoint folder {directory} ({e}).") from e

    def epochs(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def save(self, epoch: int, state: Any) -> None:
        """Saves `state` as step `epoch`, then deletes steps beyond the newest two."""
        _save(self.manager, epoch, state, f"the checkpoint of epoch {epoch} to {self.directory}")

    def restore(self, epoch: int, like: Any) -> Any:
        """The state saved at `epoch`, with the structure, types and shardings of `like`
        (a state, or an abstract state such as `programs.abstract_run_state`)."""
        return _restore(self.manager, epoch, like, f"epoch {epoch} from {self.directory}")

    def restore_latest(self, like: Any, repair: bool = True) -> tuple[int, Any] | tuple[None, None]:
        """(epoch, state) of the newest checkpoint that restores, or (None, None) if there is none.

        A newer checkpoint that fails to restore is reported in one warning and, with `repair`
        (the run's writer, holding its lock), deleted, so the run continues from the one before
        and the next save can take its place. Readers pass repair=False. When every checkpoint
        fails, CheckpointError.
        """
        failures = []
        for epoch in reversed(self.epochs()):
            try:
                state = self.restore(epoch, like)
            except CheckpointError as e:
                failures.append(e)
                continue
            for bad in failures:
                log.warning("%s; continuing from epoch %d instead.", str(bad).rstrip("."), epoch)
            for newer in self.epochs() if repair else ():
                if newer > epoch:
                    self.manager.delete(newer)
            return epoch, state
        if failures:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored ({failures[0]}); "
                                  "pass overwrite to start the run again.")
        return None, None

    # An interrupted epoch ------------------------------------------------------------------

    @property
    def _interrupted_dir(self) -> Path:
        return self.directory / "interrupted"

    def save_interrupted(self, epoch: int, steps_done: int, sums: dict, state: Any) -> None:
        """Saves the state of epoch `epoch` (0-based) after `steps_done` of its steps, with its metric sums."""
        manager = self._manager(self._interrupted_dir, 1)
        try:
            _save(manager, epoch, state, f"the interrupted epoch {epoch + 1} to {self._interrupted_dir}")
        finally:
            manager.close()
        progress = {"epoch": epoch, "steps_done": steps_done,
                    "sums": {k: np.asarray(v).tolist() for k, v in sums.items()},
                    "dtypes": {k: str(np.asarray(v).dtype) for k, v in sums.items()}}
        if jax.process_index() != 0:          # multi-host: Orbax saved from every process; one writes this
            return
        tmp = self._interrupted_dir / "progress.json.tmp"
        try:
            tmp.write_text(json.dumps(progress))
            os.replace(tmp, self._interrupted_dir / "progress.json")
        except OSError as e:
            raise CheckpointError(f"could not write {tmp.with_suffix('')} ({e.strerror}); the "
                                  "checkpoints of finished epochs are untouched.") from e

    def restore_interrupted(self, after_epoch: int, like: Any) -> tuple[int, dict, Any] | None:
        """(steps_done, sums, state) of an interrupted epoch `after_epoch` (0-based, the one after
        the latest finished epoch), or None when there is none or it cannot be restored (warned)."""
        progress_file = self._interrupted_dir / "progress.json"
        if not progress_file.exists():
            return None
        manager = self._manager(self._interrupted_dir, 1)
        try:
            progress = json.loads(progress_file.read_text())
            if progress["epoch"] != after_epoch or manager.latest_step() != after_epoch:
                return None
            state = _restore(manager, after_epoch, like, f"the interrupted epoch from {self._interrupted_dir}")
        except (CheckpointError, ValueError, KeyError) as e:
            log.warning("the interrupted epoch cannot be restored (%s); repeating it from its start.", e)
            return None
        finally:
            manager.close()
        sums = {k: np.asarray(v, progress["dtypes"][k]) for k, v in progress["sums"].items()}
        return progress["steps_done"], sums, state

    def discard_interrupted(self) -> None:
        """Removes the interrupted epoch (once a later finished epoch covers it)."""
        if jax.process_index() == 0:
            shutil.rmtree(self._interrupted_dir, ignore_errors=True)

    def remove_all(self) -> None:
        """Deletes every checkpoint of the run (for overwrite); other files in the folder stay."""
        for epoch in self.epochs():
            self.manager.delete(epoch)
        self.discard_interrupted()

    def close(self) -> None:
        self.manager.close()


def _save(manager: ocp.CheckpointManager, step: int, state: Any, what: str) -> None:
    try:
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()
    except Exception as e:
        raise CheckpointError(f"could not write {what} ({e}); earlier checkpoints are untouched.") from e


def _restore(manager: ocp.CheckpointManager, step: int, like: Any, what: str) -> Any:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:
        raise CheckpointError(f"could not restore {what} ({e}).") from e
