"""One training run, start to finish, as a flag-free library call.

    summary = run.train_and_evaluate(cfg, RunPaths("my_run"))

trains `cfg.seeds` members (or the `members` given), checkpointing every epoch and resuming from
the latest checkpoint when the run already exists with the same configuration, then scores
every member's best and final variables on the test set (`fmnist_jax.summary`). Everything it
needs is an argument; it reads no flags and prints nothing (it logs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Callable, Sequence

import jax

from fmnist_jax import config
from fmnist_jax.data import datasets
from fmnist_jax.errors import RunInterrupted
from fmnist_jax.evaluation import summary
from fmnist_jax.models import layers
from fmnist_jax.runs import checkpoint, lock
from fmnist_jax.runs.files import (
    RunPaths,
    check_resumable,
    config_record,
    read_history,
    read_record,
    write_json,
    write_text,
)
from fmnist_jax.training import sharding, train, trainer

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int], None]   # (epoch, steps done, steps in the epoch)


@dataclasses.dataclass
class TrainedRun:
    """A run after training: its trainer, final state, history and folders."""
    paths: RunPaths
    trainer: trainer.Trainer
    state: trainer.RunState
    history: list[dict]
    dataset: datasets.Dataset
    n_params: int
    started_at_epoch: int = 0       # epochs already done when this process took the run up

    @property
    def name(self) -> str:
        return self.paths.name


def default_members(cfg: train.TrainConfig) -> list[trainer.Member]:
    """cfg.seeds members with seeds cfg.seed, cfg.seed + 1, ..."""
    return trainer.seed_members(cfg.seed, cfg.seeds)


def build_trainer(cfg: train.TrainConfig, members: Sequence[trainer.Member], ds: datasets.Dataset
                  ) -> trainer.Trainer:
    """The run's Trainer: the (limited) training pool, each member's split, the member axis on the devices."""
    x, y = ds.x_train, ds.y_train
    if cfg.train_limit:
        x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    train_idx, val_idx = trainer.member_splits(y, cfg, [m.seed for m in members])
    return trainer.Trainer(cfg, x, y, train_idx, val_idx, members)


def saved_config(paths: RunPaths, **execution) -> tuple[train.TrainConfig, list[trainer.Member]]:
    """An existing run's TrainConfig and members, from its config.json.

    `execution` may override the fields that do not change results (config.EXECUTION_FIELDS,
    e.g. conv_impl="matmul"); None leaves the saved value.
    """
    record = read_record(paths)
    overrides = {k: v for k, v in execution.items() if v is not None}
    unknown = set(overrides) - set(config.EXECUTION_FIELDS)
    if unknown:
        raise ValueError(f"only execution fields can be overridden, not {sorted(unknown)}.")
    cfg = dataclasses.replace(config.from_record(record), **overrides)
    cfg.validate()
    return cfg, [trainer.Member.from_dict(m) for m in record.get("members", [{"seed": cfg.seed}])]


def load_trainer(paths: RunPaths, *, data_dir=None, **execution) -> tuple[trainer.Trainer, datasets.Dataset]:
    """The Trainer of an existing run, from its config.json, and its dataset.

    `execution` may override the fields that do not change results (see `saved_config`).
    """
    cfg, members = saved_config(paths, **execution)
    ds = datasets.load(cfg.dataset, data_dir)
    return build_trainer(cfg, members, ds), ds


def train_run(cfg: train.TrainConfig, paths: RunPaths, members: Sequence[trainer.Member] | None = None, *,
              data_dir=None, overwrite: bool = False, progress: Progress | None = None,
              stop: Callable[[], bool] | None = None) -> TrainedRun:
    """Trains (or resumes) the members of a run, checkpointing every epoch; writes config.json
    and metrics.jsonl (one line per epoch: means over members, and each member's values).

    An existing run resumes from its latest checkpoint that restores (an interrupted epoch
    included) if its config.json agrees with `cfg` (except config.RESUMABLE_FIELDS); otherwise
    RunError, unless `overwrite` starts it again. The process holds the run's lock throughout
    (`run_lock`). When `stop()` turns true (see `interruption.StopRequests`), the state after the
    current jitted call is saved and RunInterrupted is raised.
    """
    cfg.validate()
    members = list(members) if members is not None else default_members(cfg)
    ds = datasets.load(cfg.dataset, data_dir)
    t = build_trainer(cfg, members, ds)     # checks what only the data can tell, before anything is written
    record = config_record(cfg, members)
    with lock.hold(paths.checkpoints, paths.name):
        if not overwrite and (paths.results / "config.json").exists() and paths.checkpoints.exists():
            check_resumable(read_record(paths), record, paths.name)
        out = paths.make_results()
        ckpts = checkpoint.RunCheckpoints(paths.checkpoints)
        try:
            if overwrite:
                ckpts.remove_all()
                (out / "metrics.jsonl").unlink(missing_ok=True)
            write_json(out / "config.json", record)
            state, history, start_epoch, resume = _restore(ckpts, t, out, paths.name)
            started_at_epoch = start_epoch
            n_params = sum(x[0].size for x in jax.tree.leaves(train.variables_of(state.train)))
            _log_start(paths, cfg, t, n_params)
            for result, state in t.epochs(state, start_epoch, progress, resume=resume, stop=stop):
                # The row goes first: killed before the save, the epoch is repeated and its row
                # dropped on resume; the other order could lose the row of a saved epoch.
                history.append(_log_epoch(result, cfg, t, out))
                ckpts.save(result.epoch, state)
                ckpts.discard_interrupted()
                if stop is not None and stop() and result.epoch < cfg.epochs:
                    raise _interrupted(paths, stop, f"after epoch {result.epoch}")
        except trainer.Interrupted as e:
            ckpts.save_interrupted(e.epoch, e.steps_done, e.sums, e.state)
            raise _interrupted(paths, stop, f"in epoch {e.epoch + 1} after step {e.steps_done} of "
                                            f"{t.steps_per_epoch}") from None
        finally:
            ckpts.close()
    return TrainedRun(paths, t, state, history, ds, n_params, started_at_epoch)


def _restore(ckpts: checkpoint.RunCheckpoints, t: trainer.Trainer, out, name: str):
    """(state, history, start epoch, resume) from the run's checkpoints, or a fresh start."""
    like = t.abstract_state()
    start_epoch, state = ckpts.restore_latest(like)
    start_epoch = start_epoch or 0
    resume = ckpts.restore_interrupted(start_epoch, like)
    if resume is not None:
        steps_done, sums, state = resume
        resume = (steps_done, sums)
        log.info("resuming %s in epoch %d after step %d of %d", name, start_epoch + 1, steps_done,
                 t.steps_per_epoch)
    elif start_epoch:
        log.info("resuming %s from epoch %d of %d", name, start_epoch, t.cfg.epochs)
    else:
        state = t.init()
    # The history agrees with the restored epoch: rows of epochs it repeats are dropped.
    history = read_history(out / "metrics.jsonl", start_epoch)
    write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    return state, history, start_epoch, resume


def _interrupted(paths: RunPaths, stop, where: str) -> RunInterrupted:
    return RunInterrupted(f"run {paths.name!r} stopped {where}, checkpoint saved; run the same command "
                          "again to resume.", getattr(stop, "signum", None) or 2)


def _log_start(paths: RunPaths, cfg: train.TrainConfig, t: trainer.Trainer, n_params: int) -> None:
    log.info("%s: %s x %d member%s, %s parameters each, %d train / %d validation images%s, batch %d, "
             "%s, convolutions: %s, members: %s", paths.name, cfg.model, t.n_members,
             "s" if t.n_members > 1 else "", f"{n_params:,}", t.n_train, t.n_val,
             " (own split per member)" if cfg.split_per_seed else "", cfg.batch,
             sharding.describe(t.mesh), layers.resolve_conv_impl(cfg.conv_impl), t.execution_label)


def _log_epoch(result: trainer.EpochResult, cfg: train.TrainConfig, t: trainer.Trainer, out) -> dict:
    """Appends the epoch's row to metrics.jsonl, logs it, returns it."""
    row = result.as_dict()
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f%s  lr %.2g  %.1fs  %.0f img/s",
             result.epoch, cfg.epochs, row["train_loss"], row["train_accuracy"], row["val_loss"],
             row["val_accuracy"], f" (min {min(result.val_accuracy):.4f}, max {max(result.val_accuracy):.4f})"
             if t.n_members > 1 else "", row["lr"], result.seconds, result.images_per_second)
    return row


def train_and_evaluate(cfg: train.TrainConfig, paths: RunPaths,
                       members: Sequence[trainer.Member] | None = None, *, data_dir=None,
                       overwrite: bool = False, progress: Progress | None = None,
                       stop: Callable[[], bool] | None = None, invocation: dict | None = None) -> dict:
    """Trains (or resumes) a run, then scores it on the test set; returns (and writes) its summary.
    The run stays locked to this process until its summary is written. `invocation` (e.g. the
    command and preset that started it) is recorded in the summary as it is."""
    with lock.hold(paths.checkpoints, paths.name):
        return summary.summarize(train_run(cfg, paths, members, data_dir=data_dir, overwrite=overwrite,
                                           progress=progress, stop=stop), invocation)
