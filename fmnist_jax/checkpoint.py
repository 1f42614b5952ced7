"""Orbax checkpoints of a run: the latest run state, which carries every member's best.

One CheckpointManager per run directory, steps numbered by epoch, the newest kept. The saved
pytree is `trainer.RunState`: the latest training state of every member and, per member, the
variables of its best validation epoch. Keeping the best inside the state (rather than as a
separate Orbax step chosen by a metric) gives each ensemble member its own best, and a resumed
run the exact best-so-far of each. Orbax writes each step to a temporary folder and renames it
when complete, and deletes the previous step only after that, so a crash or a full disk during
a save never loses the last good checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from fmnist_jax.errors import UserError

log = logging.getLogger(__name__)


class CheckpointError(UserError):
    """A checkpoint could not be written or read; the message names the folder and the cause."""


class RunCheckpoints:
    """The latest checkpoint of one run in `directory` (created if missing)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            raise CheckpointError(f"cannot use the checkpoint folder {self.directory} ({e}).") from e

    def epochs(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def save(self, epoch: int, state: Any) -> None:
        """Saves `state` as step `epoch`, then deletes the previous step."""
        try:
            self.manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
            self.manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(
                f"could not write the checkpoint of epoch {epoch} to {self.directory} ({e}); "
                "earlier checkpoints are untouched.") from e

    def restore(self, epoch: int, like: Any) -> Any:
        """The state saved at `epoch`, with the structure, types and shardings of `like`
        (a state, or an abstract state such as Trainer.abstract_state())."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            raise CheckpointError(f"could not restore epoch {epoch} from {self.directory} ({e}).") from e

    def close(self) -> None:
        self.manager.close()
