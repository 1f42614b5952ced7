"""Orbax checkpoints of a run: the best state by validation accuracy and the latest state.

One CheckpointManager per run directory, steps numbered by epoch. Its preservation policy keeps
the union of LatestN(1) and BestN(1) by validation accuracy: with `best_fn` + `max_to_keep`
Orbax may delete the newest step, which breaks resuming. Orbax writes each step to a temporary
folder and renames it when complete, so a crash during a save never leaves a step that
`latest_epoch` or `restore` would pick up.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message names the folder and the cause."""


def _best_key(metrics: dict) -> float:
    # Highest validation accuracy; among equals the earliest epoch (accuracies differ by at least
    # 1/n_val >> 1e-9 * epochs, so the tie-break never reorders different accuracies).
    return float(metrics["val_accuracy"]) - 1e-9 * float(metrics["epoch"])


class RunCheckpoints:
    """Best + latest checkpoints of one run in `directory` (created if missing)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(1),
                policies.BestN(get_metric_fn=_best_key, n=1, keep_checkpoints_without_metrics=False),
            ]),
            # Orbax persists step metrics only when best_fn is set; without them a reopened run
            # would not know its best step. The explicit policy above decides what is kept.
            best_fn=_best_key,
            best_mode="max",
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

    def best_epoch(self) -> int | None:
        scored = [(self._metrics(e), e) for e in self.epochs()]
        scored = [(_best_key(m), e) for m, e in scored if m]
        return max(scored)[1] if scored else None

    def _metrics(self, epoch: int) -> dict | None:
        try:
            return self.manager.metrics(epoch)
        except Exception:  # a step saved without metrics
            return None

    def metrics(self, epoch: int) -> dict:
        return self._metrics(epoch) or {}

    def save(self, epoch: int, state: Any, val_accuracy: float) -> None:
        """Saves `state` as step `epoch`; old steps that are neither best nor latest are deleted."""
        metrics = {"val_accuracy": float(val_accuracy), "epoch": int(epoch)}
        try:
            self.manager.save(epoch, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
            self.manager.wait_until_finished()
        except Exception as e:
            raise CheckpointError(
                f"could not write the checkpoint of epoch {epoch} to {self.directory} ({e}); "
                "earlier checkpoints are untouched.") from e

    def restore(self, epoch: int, like: Any) -> Any:
        """The state saved at `epoch`, with the structure and types of `like` (a state or abstract state)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            return self.manager.restore(epoch, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            raise CheckpointError(f"could not restore epoch {epoch} from {self.directory} ({e}).") from e

    def close(self) -> None:
        self.manager.close()
