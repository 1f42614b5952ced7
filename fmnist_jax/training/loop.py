"""The epoch loop over a run's members, on data already in memory.

    setup = RunSetup.place(cfg, x, y, train_idx, val_idx, members)   # data, splits and keys on the devices
    programs = setup.programs()                                      # compiled once for the run
    state = init(setup, programs)
    for result, state in epochs(setup, programs, state):
        ...                                                          # one EpochResult per epoch

`training.train` wraps this loop with a run's folders (checkpoints, metrics, summary); tests,
benchmarks and notebooks use it as it is.

Randomness: each member's root key ``jax.random.key(seed)`` is split into init / data / loop
keys (`step.run_keys`); epoch e shuffles with ``fold_in(data_key, e)``, step s augments and
drops out with ``fold_in(loop_key, s)``. Nothing else is random, so a run resumed mid-epoch
(`epochs(..., resume=...)`) continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fmnist_jax.config import TrainConfig
from fmnist_jax.errors import ConfigError
from fmnist_jax.training import members as members_lib
from fmnist_jax.training import programs as programs_lib
from fmnist_jax.training import sharding, step
from fmnist_jax.training.members import Member
from fmnist_jax.training.programs import Programs, RunState

# How many training images a data-dependent initialisation sees per member. 2,000 images give the
# whitening layer 1.35 million 3x3 patches for a 9x9 covariance, and keep the patches (float32,
# about 50 MB a member, all members at once under vmap) small.
DATA_INIT_IMAGES = 2000


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """A run's configuration, members and data placed on the devices: what its programs run on.

    x, y are the whole pool of training images (replicated); train_idx / val_idx [M, n] index
    each member's split into it; the keys and hyper-parameters have the member axis first,
    sharded over the mesh's member groups.
    """
    cfg: TrainConfig
    members: tuple[Member, ...]
    mesh: Any
    execution: str                 # "vmap" or "map" (members.resolve_member_execution)
    x: jax.Array
    y: jax.Array
    train_idx: jax.Array
    val_idx: np.ndarray
    init_keys: jax.Array
    data_keys: jax.Array
    loop_keys: jax.Array
    hparams: step.HParams
    steps_per_epoch: int

    @classmethod
    def place(cls, cfg: TrainConfig, x, y, train_idx, val_idx, members: Sequence[Member] | None = None,
              devices: Sequence[jax.Device] | None = None) -> "RunSetup":
        """Checks what only the data can tell (batch vs split sizes), then places everything.

        train_idx / val_idx may be [n] (every member's) or [M, n] (one split per member).
        """
        cfg.validate()
        members = tuple(members) if members else (Member(cfg.seed),)
        n_members = len(members)
        train_idx = np.broadcast_to(np.asarray(train_idx), (n_members, np.shape(train_idx)[-1]))
        val_idx = np.broadcast_to(np.asarray(val_idx), (n_members, np.shape(val_idx)[-1]))
        if train_idx.shape[1] < cfg.batch:
            raise ConfigError("batch", f"{cfg.batch} is larger than the training set "
                                       f"({train_idx.shape[1]} images).")
        if val_idx.shape[1] == 0 and cfg.select != "final":
            raise ConfigError("val_fraction", f"{cfg.val_fraction} leaves an empty validation split; raise it.")
        hparams = programs_lib.member_hparams(cfg, members)
        mesh = sharding.make_mesh(n_members, cfg.batch, devices)
        by_member = sharding.member_sharding(mesh)
        replicated = sharding.replicated(mesh)
        keys = jax.vmap(step.run_keys)(jnp.asarray([m.seed for m in members]))
        init_keys, data_keys, loop_keys = (sharding.put_keys(k, by_member) for k in keys)
        return cls(cfg=cfg, members=members, mesh=mesh,
                   execution=members_lib.resolve_member_execution(cfg.member_execution, mesh, n_members),
                   x=sharding.put(np.asarray(x), replicated),
                   y=sharding.put(np.asarray(y).astype(np.int32), replicated),
                   train_idx=sharding.put(train_idx.astype(np.int32), by_member),
                   val_idx=val_idx.astype(np.int32), init_keys=init_keys, data_keys=data_keys,
                   loop_keys=loop_keys, hparams=hparams,
                   steps_per_epoch=cfg.epoch_passes * train_idx.shape[1] // cfg.batch)

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def n_train(self) -> int:
        return int(self.train_idx.shape[1])

    @property
    def n_val(self) -> int:
        return int(self.val_idx.shape[1])

    @property
    def execution_label(self) -> str:
        return members_lib.execution_label(self.execution, self.n_members)

    def programs(self) -> Programs:
        """The run's compiled programs (built anew on each call: keep the result)."""
        return programs_lib.make_programs(self.cfg, self.steps_per_epoch, self.n_train, self.mesh, self.execution)

    def replicate(self, x) -> jax.Array:
        """A host array placed whole on every device of the run's mesh (e.g. the test images)."""
        return sharding.put(np.asarray(x), sharding.replicated(self.mesh))

    def abstract_state(self) -> RunState:
        """Shapes, dtypes and shardings of the run state, without computing it (for restoring)."""
        return programs_lib.abstract_run_state(self.cfg, self.members, self.mesh)


@dataclasses.dataclass
class EpochResult:
    """One epoch of every member; the scalar fields of `as_dict` are means over members.
    val_loss / val_accuracy are None when the epoch was not validated (no validation split, or
    an epoch between two of TrainConfig.val_every), and `as_dict` leaves them out."""
    epoch: int
    seconds: float
    images_per_second: float     # all members together
    lr: list[float]
    train_loss: list[float]
    train_accuracy: list[float]
    val_loss: list[float] | None
    val_accuracy: list[float] | None

    def as_dict(self) -> dict:
        per_member = ("lr", "train_loss", "train_accuracy") + (("val_loss", "val_accuracy") if self.validated else ())
        row = {"epoch": self.epoch, "seconds": self.seconds, "images_per_second": self.images_per_second}
        row |= {name: float(np.mean(getattr(self, name))) for name in per_member}
        row["members"] = {name: list(getattr(self, name)) for name in per_member}
        return row

    @property
    def validated(self) -> bool:
        """Whether the epoch was scored on a validation split (never when val_fraction=0; with
        val_every > 1, only every val_every-th epoch and the last)."""
        return self.val_accuracy is not None


class Interrupted(Exception):
    """Training stopped between two jitted calls of epoch `epoch` (0-based) on request."""

    def __init__(self, epoch: int, steps_done: int, sums: dict, state: RunState):
        super().__init__(f"stopped in epoch {epoch + 1} after {steps_done} steps")
        self.epoch, self.steps_done, self.sums, self.state = epoch, steps_done, sums, state


def init(setup: RunSetup, programs: Programs) -> RunState:
    """Fresh members, sharded over the member axis; a model initialised from data (see
    `step.init_state`) sees the first DATA_INIT_IMAGES images of each member's training split."""
    images = None
    if hasattr(programs.model, "init_from_data"):
        images = setup.x[setup.train_idx[:, :min(DATA_INIT_IMAGES, setup.n_train)]]
    return programs.init(setup.init_keys, setup.hparams, images)


def validate(setup: RunSetup, programs: Programs, variables) -> dict | None:
    """Each member's loss and accuracy on its own validation split ({name: [M]}); the loss
    includes the L2 term of the regularized kernels (TrainConfig.l2), as Keras' val_loss does.
    Without a validation split (val_fraction=0), None."""
    if setup.n_val == 0:
        return None
    val = programs.evaluate(variables, setup.x, setup.y, setup.val_idx)
    if setup.cfg.l2:
        val["loss"] = val["loss"] + sharding.to_host(programs.penalty(variables))
    return val


def train_epoch(setup: RunSetup, programs: Programs, state: RunState, epoch: int,
                progress: Callable[[int, int], None] | None = None, *, start_step: int = 0,
                totals: dict | None = None, stop: Callable[[], bool] | None = None) -> tuple[RunState, dict, int]:
    """Trains epoch `epoch` (0-based) of every member from step `start_step`, adding to `totals`
    (metric sums [M] of the steps before it), in jitted segments of `step.segment_length` steps.
    `progress(done, total)` is called as the epoch starts and after each segment. Between segments
    `stop()` may end the epoch early. Returns (state, metric sums [M] on the
    host, steps done)."""
    batches = programs.batches(setup.data_keys, setup.train_idx, epoch)
    segment = step.segment_length(setup.steps_per_epoch)
    train_state, done = state.train, start_step
    if progress is not None:
        progress(done, setup.steps_per_epoch)           # the epoch starts (after `start_step` steps)
    for start in range(start_step, setup.steps_per_epoch, segment):
        if stop is not None and done > start_step and stop():
            break
        train_state, sums = programs.run_steps(train_state, setup.x, setup.y, batches[:, start:start + segment],
                                               setup.loop_keys, setup.data_keys)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        done = start + segment
        if progress is not None:
            # Dispatch is asynchronous: wait for the segment, so that the report says what is done
            # (the next segment is dispatched a few microseconds later; benchmarks.progress_overhead).
            jax.block_until_ready(sums)
            progress(done, setup.steps_per_epoch)
    return state.replace(train=train_state), sharding.to_host(totals), done


def epochs(setup: RunSetup, programs: Programs, state: RunState, start_epoch: int = 0,
           progress: Callable[[int, int, int], None] | None = None, *, resume: tuple[int, dict] | None = None,
           stop: Callable[[], bool] | None = None, clock: Callable[[], float] = time.perf_counter
           ) -> Iterator[tuple[EpochResult, RunState]]:
    """Trains epochs start_epoch .. cfg.epochs-1, yielding each epoch's result and run state.

    progress, if given, is called as progress(epoch (1-based), done_steps, total_steps).
    resume: (steps done, metric sums) of an interrupted epoch `start_epoch`, whose state `state`
    is. stop: asked between jitted calls; when it says yes, `Interrupted` is raised with what a
    checkpoint needs to finish the epoch later exactly as if never stopped. A non-finite training
    loss raises step.TrainingError. clock: seconds for the epochs' timings (`runs.pause_clock`'s
    `now` leaves a SIGSTOP pause out of them).
    """
    cfg = setup.cfg
    peak_lr = np.asarray(setup.hparams.lr)
    lr_shape = step.learning_rate_schedule(cfg, setup.steps_per_epoch, peak=1.0)
    for epoch in range(start_epoch, cfg.epochs):
        lr = peak_lr * float(lr_shape(epoch * setup.steps_per_epoch))
        started = clock()
        epoch_progress = None if progress is None else functools.partial(progress, epoch + 1)
        start_step, totals = resume if resume is not None and epoch == start_epoch else (0, None)
        state, sums, done = train_epoch(setup, programs, state, epoch, epoch_progress, start_step=start_step,
                                        totals=totals, stop=stop)
        jax.block_until_ready(state)
        if done < setup.steps_per_epoch:
            raise Interrupted(epoch, done, sums, state)
        seconds = clock() - started
        train_loss = sums["loss"] / sums["count"]
        _check_finite(setup.members, train_loss, epoch)
        variables = step.variables_of(state.train)
        val = validate(setup, programs, variables) if validates(cfg, epoch + 1) else None
        # Only validated epochs compete for best; select=final keeps every epoch (the last is
        # scored), and without validation there are no scores to record.
        if val is not None or cfg.select == "final":
            no_scores = np.full(setup.n_members, np.nan, np.float32)
            state = programs.keep_best(state, jnp.asarray(no_scores if val is None else val["accuracy"], jnp.float32),
                                       jnp.asarray(no_scores if val is None else val["loss"], jnp.float32), epoch + 1)
        yield EpochResult(
            epoch=epoch + 1, seconds=seconds,
            images_per_second=float(sums["count"].sum()) * (1 - start_step / setup.steps_per_epoch) / seconds,
            lr=lr.tolist(), train_loss=train_loss.tolist(), train_accuracy=(sums["correct"] / sums["count"]).tolist(),
            val_loss=None if val is None else val["loss"].tolist(),
            val_accuracy=None if val is None else val["accuracy"].tolist()), state


def fit(setup: RunSetup, programs: Programs | None = None) -> RunState:
    """Every epoch of a fresh run in memory, no files: the final run state."""
    programs = programs or setup.programs()
    state = init(setup, programs)
    for _, state in epochs(setup, programs, state):
        pass
    return state


def validates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether epoch `epoch` (1-based) is scored on the validation split: every cfg.val_every-th
    epoch and always the last, so that the final state has a score to compete with."""
    return epoch % cfg.val_every == 0 or epoch == cfg.epochs


def _check_finite(members: Sequence[Member], train_loss, epoch: int) -> None:
    bad = [(m.seed, loss) for m, loss in zip(members, train_loss) if not math.isfinite(loss)]
    if bad:
        raise step.TrainingError(
            f"the training loss became {bad[0][1]} in epoch {epoch + 1} (member seed "
            f"{bad[0][0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); lower the learning "
            "rate (lr) or check the data (the last good checkpoint is kept).")
