"""One training run, start to finish, as a flag-free library call.

    summary = train.train_and_evaluate(cfg, RunPaths("my_run"))

reads top to bottom: the data, the members' splits and keys on the devices, the run's folder
(locked, checked, config.json written), the state (restored from the latest checkpoint or
fresh), the epoch loop (each epoch's metrics row and checkpoint), and the summary on the test
set. Everything it needs is an argument; it reads no flags and prints nothing (it logs).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Sequence

import jax

from fmnist_jax.config import TrainConfig
from fmnist_jax.data import datasets, pools
from fmnist_jax.evaluation import summary
from fmnist_jax.models import layers
from fmnist_jax.runs.files import RunPaths, config_record
from fmnist_jax.runs.pause_clock import PauseClock
from fmnist_jax.runs.run_dir import RunDir
from fmnist_jax.training import loop, sharding, step
from fmnist_jax.training import members as members_lib
from fmnist_jax.training.members import Member
from fmnist_jax.training.programs import Programs, RunState

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int], None]   # (epoch, steps done, steps in the epoch)


@dataclasses.dataclass
class TrainedRun:
    """A run after training: where it lives, what it ran on, its final state and history."""
    paths: RunPaths
    setup: loop.RunSetup
    programs: Programs
    state: RunState
    history: list[dict]
    dataset: datasets.Dataset
    started_at_epoch: int = 0       # epochs already done when this process took the run up

    @property
    def name(self) -> str:
        return self.paths.name

    @property
    def n_params(self) -> int:
        return _count_variables(self.state)


def train_and_evaluate(cfg: TrainConfig, paths: RunPaths, members: Sequence[Member] | None = None, *,
                       data_dir=None, overwrite: bool = False, progress: Progress | None = None,
                       stop: Callable[[], bool] | None = None, invocation: dict | None = None,
                       clock: PauseClock | None = None) -> dict:
    """Trains (or resumes) the run's members, then scores them on the test set; returns (and
    writes) the summary. The run stays locked to this process until its summary is written.

    An existing run resumes from its latest checkpoint that restores (an interrupted epoch
    included) if its config.json agrees with `cfg` (except config.RESUMABLE_FIELDS); otherwise
    RunError, unless `overwrite` starts it again. When `stop()` turns true (see
    `interruption.StopRequests`), the state after the current jitted call is saved and
    RunInterrupted is raised. `invocation` (the command and preset) is recorded in the summary.
    `clock` (a running `pause_clock.PauseClock`) leaves the time the process was stopped (SIGSTOP)
    out of the epochs' seconds and the summary's wall clock.
    """
    setup, dataset = place(cfg, members, data_dir)
    with RunDir.open(paths, config_record(cfg, setup.members), overwrite=overwrite) as run_dir:
        trained = train_in(run_dir, setup, dataset, progress, stop, clock=clock.now if clock else time.perf_counter)
        return summary.summarize(trained, invocation, clock.stopped_seconds if clock else 0.0)


def train_run(cfg: TrainConfig, paths: RunPaths, members: Sequence[Member] | None = None, *,
              data_dir=None, overwrite: bool = False, progress: Progress | None = None,
              stop: Callable[[], bool] | None = None) -> TrainedRun:
    """`train_and_evaluate` without the test-set summary (a sweep scores only its best point)."""
    setup, dataset = place(cfg, members, data_dir)
    with RunDir.open(paths, config_record(cfg, setup.members), overwrite=overwrite) as run_dir:
        return train_in(run_dir, setup, dataset, progress, stop)


def place(cfg: TrainConfig, members: Sequence[Member] | None, data_dir=None
          ) -> tuple[loop.RunSetup, datasets.Dataset]:
    """The dataset, and the run's members with their splits on the devices (cfg.seeds members
    with seeds cfg.seed, cfg.seed + 1, ... unless `members` are given), the training pool with its
    fixed augmented copies when the config asks for them (`data.pools`). Every check that needs
    the data happens here, before the run's folder is touched."""
    cfg.validate()
    members = list(members) if members is not None else members_lib.seed_members(cfg.seed, cfg.seeds)
    dataset = datasets.load(cfg.dataset, data_dir)
    x, y = dataset.x_train, dataset.y_train
    if cfg.train_limit:
        x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    copies = dict(copies=cfg.fixed_copies, transforms=cfg.copy_augment, key=pools.copies_key(cfg.data_seed if cfg.data_seed >= 0 else cfg.seed),
                  options=step.augment_options(cfg))
    if cfg.fixed_copies and cfg.copies_before_split:        # seed 003: copies of every image, then the split
        x, y = pools.augmented_pool(x, **copies), pools.pooled_labels(y, cfg.fixed_copies)
    train_idx, val_idx = members_lib.member_splits(y, cfg, [m.seed for m in members])
    if cfg.fixed_copies and not cfg.copies_before_split:    # seed 002: copies of the training split only
        x, y, train_idx, val_idx = pools.pool_training_split(x, y, train_idx[0], val_idx[0], **copies)
    return loop.RunSetup.place(cfg, x, y, train_idx, val_idx, members), dataset


def train_in(run_dir: RunDir, setup: loop.RunSetup, dataset: datasets.Dataset, progress: Progress | None = None,
             stop: Callable[[], bool] | None = None, clock: Callable[[], float] = time.perf_counter) -> TrainedRun:
    """The epoch loop of a run in its folder: restore or start fresh, then every epoch's metrics
    row and checkpoint; a stop request saves the state at the step boundary and raises."""
    cfg = setup.cfg
    programs = setup.programs()
    restored = run_dir.restore(setup.abstract_state(), setup.steps_per_epoch)
    state = restored.state if restored.state is not None else loop.init(setup, programs)
    history = restored.history
    _log_start(run_dir.name, setup, _count_variables(state))
    try:
        for result, state in loop.epochs(setup, programs, state, restored.start_epoch, progress,
                                         resume=restored.resume, stop=stop, clock=clock):
            row = result.as_dict()
            _log_epoch(row, result, cfg.epochs, setup.n_val)
            run_dir.record_epoch(row, result.epoch, state)
            history.append(row)
            if stop is not None and stop() and result.epoch < cfg.epochs:
                raise run_dir.interrupted(stop, f"after epoch {result.epoch}")
    except loop.Interrupted as e:
        run_dir.save_interrupted(e.epoch, e.steps_done, e.sums, e.state)
        raise run_dir.interrupted(stop, f"in epoch {e.epoch + 1} after step {e.steps_done} of "
                                        f"{setup.steps_per_epoch}") from None
    return TrainedRun(run_dir.paths, setup, programs, state, history, dataset, restored.start_epoch)


def _count_variables(state: RunState) -> int:
    """A member's parameters and batch statistics (Keras' "Total params")."""
    return sum(x[0].size for x in jax.tree.leaves(step.variables_of(state.train)))


def _log_start(name: str, setup: loop.RunSetup, n_params: int) -> None:
    cfg = setup.cfg
    log.info("%s: %s%s x %d member%s, %s parameters each, %d train / %d validation images%s, batch %d, "
             "%s, convolutions: %s, members: %s", name, cfg.model,
             f" {dict(cfg.model_args)}" if cfg.model_args else "", setup.n_members,
             "s" if setup.n_members > 1 else "", f"{n_params:,}", setup.n_train, setup.n_val,
             " (own split per member)" if cfg.split_per_seed else "", cfg.batch, sharding.describe(setup.mesh),
             layers.resolve_conv_impl(cfg.conv_impl), setup.execution_label)


def _log_epoch(row: dict, result: loop.EpochResult, epochs: int, n_val: int) -> None:
    val = "  (no validation split)" if n_val == 0 else "  (not validated: val_every)"
    if result.validated:
        spread = (f" (min {min(result.val_accuracy):.4f}, max {max(result.val_accuracy):.4f})"
                  if len(result.val_accuracy) > 1 else "")
        val = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}{spread}"
    log.info("epoch %d/%d  loss %.4f  acc %.4f%s  lr %.2g  %.1fs  %.0f img/s", result.epoch, epochs,
             row["train_loss"], row["train_accuracy"], val, row["lr"], result.seconds, result.images_per_second)
