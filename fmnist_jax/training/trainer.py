"""The training loop over a member axis: a single run is an ensemble of one.

A run trains M members at once as one program: the per-member step of `fmnist_jax.train` runs
over the member axis, vmapped or one member after another (``jit(vmap|lax.map(scan(train_step)))``,
see `resolve_member_execution`); a single member runs unbatched. Members differ in their seed
(init, shuffling, augmentation and dropout keys), optionally in their train/validation split
(seed 003's protocol) and in their shape-free hyper-parameters (a sweep). The member axis is
sharded across devices when there are several (`fmnist_jax.sharding`).

Each member keeps its own best-by-validation parameters inside the run state, so one checkpoint
of the `RunState` pytree holds the latest state of every member and every member's best.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fmnist_jax.config import MEMBER_EXECUTIONS
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError
from fmnist_jax.evaluation import tta
from fmnist_jax.models.layers import preprocess
from fmnist_jax.training import sharding, train

# How many training images a data-dependent initialisation sees per member. 2,000 images give the
# whitening layer 1.35 million 3x3 patches for a 9x9 covariance, and keep the patches (float32,
# about 50 MB a member, all members at once under vmap) small.
DATA_INIT_IMAGES = 2000


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of a run: its seed and the hyper-parameters it overrides (see train.HPARAM_NAMES)."""
    seed: int
    hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"seed": self.seed, "hparams": dict(self.hparams)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Member":
        return cls(seed=int(d["seed"]), hparams=dict(d.get("hparams", {})))


def seed_members(first_seed: int, n: int) -> list[Member]:
    """n members with seeds first_seed, first_seed + 1, ..."""
    return [Member(first_seed + i) for i in range(n)]


@flax.struct.dataclass
class RunState:
    """Everything a run checkpoints; every array has the member axis first.

    `best` holds each member's parameters and batch statistics from its epoch of highest
    validation accuracy (the earliest among equals); `best_epoch` is 0 before the first epoch.
    """
    train: train.TrainState
    best: dict
    best_val_accuracy: jax.Array
    best_epoch: jax.Array


def member_splits(labels: np.ndarray, cfg: train.TrainConfig, seeds: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx [M, n_train], val_idx [M, n_val]) into `labels`, as cfg.split says.

    cfg.split_per_seed: each member splits with its own seed (seed 003 trained 5 nets on 5 random
    80/20 splits); otherwise every member uses the split of cfg.seed. Split sizes do not depend on
    the seed, so the indices stack. (TrainConfig.validate refuses an ordered split per seed.)
    """
    def one(seed):
        return datasets.train_val_split(labels, cfg.val_fraction, seed, shuffle=cfg.split != "ordered",
                                    stratify=cfg.split == "stratified")
    splits = [one(s) for s in seeds] if cfg.split_per_seed else [one(cfg.seed)] * len(seeds)
    return np.stack([t for t, _ in splits]), np.stack([v for _, v in splits])


@dataclasses.dataclass
class EpochResult:
    """One epoch of every member; the scalar fields are means over members."""
    epoch: int
    seconds: float
    images_per_second: float     # all members together
    lr: list[float]
    train_loss: list[float]
    train_accuracy: list[float]
    val_loss: list[float]
    val_accuracy: list[float]

    def as_dict(self) -> dict:
        per_member = ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
        row = {"epoch": self.epoch, "seconds": self.seconds, "images_per_second": self.images_per_second}
        row |= {name: float(np.mean(getattr(self, name))) for name in per_member}
        row["members"] = {name: list(getattr(self, name)) for name in per_member}
        return row


def resolve_member_execution(execution: str, mesh, n_members: int) -> str:
    """How the training step runs over the member axis inside the one compiled program.

    "vmap": all members batched together, the way to fill a GPU/TPU and the only way to shard
    members across devices. "map": `lax.map`, one member after another inside the program; on a
    CPU the members share the same cores anyway, and batching them only costs (vmapped
    convolutions over per-member kernels are grouped convolutions; `benchmarks.ensemble`
    compares both, figures in benchmarks/README.md).
    "auto": "map" for several members on a single CPU member group, "vmap" otherwise. A single
    member runs unbatched whatever the choice (see `over_members`).
    """
    if execution not in MEMBER_EXECUTIONS:
        raise ConfigError("member_execution", f"does not know {execution!r}; choose from "
                                              f"{', '.join(MEMBER_EXECUTIONS)}.")
    if execution != "auto":
        return execution
    single_group = mesh.shape[sharding.MEMBERS] == 1
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    return "map" if n_members > 1 and single_group and on_cpu else "vmap"


def over_members(fn: Callable, in_axes: tuple, execution: str) -> Callable:
    """`fn` applied to every member: vmapped, or lax.map'ed (arguments with axis None are shared).

    A member axis of length 1 is squeezed away instead, whatever the execution, so a single run
    traces `fn` unbatched: vmap would turn every convolution into a grouped convolution over
    per-member kernels (XLA CPU's slow path), and lax.map would wrap the step in a loop.
    """
    def member_args(args, pick):
        return [jax.tree.map(pick, a) if axis == 0 else a for a, axis in zip(args, in_axes)]

    def mapped(*args):
        per_member = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

        def one(member):
            it = iter(member)
            return fn(*[next(it) if axis == 0 else a for a, axis in zip(args, in_axes)])

        return jax.lax.map(one, per_member)

    def run(*args):
        sizes = {leaf.shape[0] for a, axis in zip(args, in_axes) if axis == 0 for leaf in jax.tree.leaves(a)}
        if sizes == {1}:
            return jax.tree.map(lambda a: a[None], fn(*member_args(args, lambda a: a[0])))
        if execution == "vmap":
            return jax.vmap(fn, in_axes=in_axes)(*args)
        return mapped(*args)

    return run


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def make_member_evaluate(model, batch_size: int, execution: str = "vmap"):
    """evaluate(variables [M], x, y, idx [M, n]) -> {'loss', 'accuracy'} float arrays [M].

    Each member is evaluated on its own examples (its validation split); exact over a partial
    last batch. `execution` runs the members as `over_members` does ("vmap" or "map").
    """
    eval_step = train.make_eval_step(model)

    @jax.jit
    def sums(variables, x, y, idx, mask):
        def member(v, member_idx):
            def body(carry, inputs):
                i, m = inputs
                return jax.tree.map(jnp.add, carry, eval_step(v, x[i], y[i], m)), None
            zero = {name: jnp.zeros((), jnp.float32) for name in ("loss", "correct", "count")}
            return jax.lax.scan(body, zero, (member_idx, mask))[0]
        return over_members(member, (0, 0), execution)(variables, idx)

    def evaluate(variables, x, y, idx):
        idx = np.asarray(idx)
        n_members, n = idx.shape
        positions, mask = train.padded_batches(n, batch_size)
        batched = idx[:, positions]                       # [M, steps, batch]
        total = jax.device_get(sums(variables, x, y, batched, mask.astype(np.float32)))
        return {"loss": total["loss"] / total["count"], "accuracy": total["correct"] / total["count"]}

    return evaluate


def make_member_predict(model, batch_size: int, execution: str = "vmap"):
    """predict(variables [M], x, view=tta.PLAIN) -> logits [M, N, 10] (numpy).

    `view` (a `tta.View`) predicts on that view of every image. With `views=` (a sequence of
    views) instead, predict returns a list of logits [M, N, 10], one per view, computed by one
    program: each batch is read once and its views go through the net one after another
    (`lax.map`), so a set of views costs one compilation and no more memory than one view.
    `execution` runs the members as `over_members` does ("vmap" or "map").
    """

    def apply(v, images):
        return model.apply(v, images, train=False)

    @functools.partial(jax.jit, static_argnames="views")
    def logits_of(variables, x, idx, views):
        def member(v):
            def body(_, i):
                images = preprocess(x[i])
                if len(views) == 1:      # no loop around the net: the program of a plain predict
                    return None, apply(v, tta.apply_view(images, views[0]))[None]
                stacked = jnp.stack([tta.apply_view(images, view) for view in views])
                return None, jax.lax.map(functools.partial(apply, v), stacked)
            return jax.lax.scan(body, None, idx)[1]                     # [steps, V, batch, C]
        return over_members(member, (0,), execution)(variables)

    def predict(variables, x, view: tta.View = tta.PLAIN, *, views: Sequence[tta.View] | None = None):
        chosen = (tta.View(*view),) if views is None else tuple(tta.View(*v) for v in views)
        positions, _ = train.padded_batches(len(x), batch_size)
        logits = np.asarray(jax.device_get(logits_of(variables, x, positions, chosen)))
        m, steps, v, b, c = logits.shape
        logits = logits.transpose(2, 0, 1, 3, 4).reshape(v, m, steps * b, c)[:, :, : len(x)]
        return logits[0] if views is None else list(logits)

    return predict


class Trainer:
    """The compiled programs of one configuration over M members, on device-resident data.

    Use: ``t = Trainer(cfg, x, y, train_idx, val_idx, members)``; ``state = t.init()``;
    ``for result, state in t.epochs(state, start_epoch): ...``. x, y are the whole pool of
    training images; train_idx / val_idx ([n] shared, or [M, n] per member) index into it.
    """

    def __init__(self, cfg: train.TrainConfig, x, y, train_idx, val_idx,
                 members: Sequence[Member] | None = None, devices: Sequence[jax.Device] | None = None):
        cfg.validate()
        self.cfg = cfg
        self.members = list(members) if members else [Member(cfg.seed)]
        n_members = len(self.members)
        train_idx = np.broadcast_to(np.asarray(train_idx), (n_members, np.shape(train_idx)[-1]))
        val_idx = np.broadcast_to(np.asarray(val_idx), (n_members, np.shape(val_idx)[-1]))
        if train_idx.shape[1] < cfg.batch:
            raise ConfigError("batch", f"{cfg.batch} is larger than the training set "
                                       f"({train_idx.shape[1]} images).")
        if val_idx.shape[1] == 0:
            raise ConfigError("val_fraction", f"{cfg.val_fraction} leaves an empty validation split; "
                                              "raise it.")
        self.hparams = _stack([train.HParams.create(cfg, **m.hparams) for m in self.members])
        self.steps_per_epoch = cfg.epoch_passes * train_idx.shape[1] // cfg.batch
        self.n_train, self.n_val = train_idx.shape[1], val_idx.shape[1]
        self.lr_shape = train.learning_rate_schedule(cfg, self.steps_per_epoch, peak=1.0)

        self.mesh = sharding.make_mesh(n_members, cfg.batch, devices)
        by_member = sharding.member_sharding(self.mesh)
        self.member_execution = resolve_member_execution(cfg.member_execution, self.mesh, n_members)
        self.x = self.replicate(x)
        self.y = self.replicate(np.asarray(y).astype(np.int32))
        self.train_idx = sharding.put(train_idx.astype(np.int32), by_member)
        self.val_idx = val_idx.astype(np.int32)
        keys = jax.vmap(train.run_keys)(jnp.asarray([m.seed for m in self.members]))
        self.init_keys, self.data_keys, self.loop_keys = (sharding.put_keys(k, by_member) for k in keys)

        programs = _programs(dataclasses.replace(cfg, seed=0, seeds=1), self.steps_per_epoch, self.n_train,
                             self.mesh, self.member_execution)
        self.model = programs.model
        self._init, self._run_steps, self._batches, self._keep_best = (
            programs.init, programs.run_steps, programs.batches, programs.keep_best)
        self.evaluate, self.predict = programs.evaluate, programs.predict
        self.segment = train.segment_length(self.steps_per_epoch)

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def execution_label(self) -> str:
        """How the members run, as logs and summaries name it (one member runs unbatched)."""
        return self.member_execution if self.n_members > 1 else "unbatched (one member)"

    @staticmethod
    def _init_run_state(init_one: Callable):
        def init(key, hparams, images=None):
            state = init_one(key, hparams, images)
            best = train.variables_of(state)
            return RunState(train=state, best=best, best_val_accuracy=jnp.asarray(-1.0, jnp.float32),
                            best_epoch=jnp.asarray(0, jnp.int32))
        return init

    def replicate(self, x) -> jax.Array:
        """A host array placed whole on every device of the run's mesh (e.g. the test images)."""
        return sharding.put(np.asarray(x), sharding.replicated(self.mesh))

    def init(self) -> RunState:
        """Fresh members, sharded over the member axis; a model initialised from data (see
        `train.init_state`) sees the first DATA_INIT_IMAGES images of each member's training split."""
        images = None
        if hasattr(self.model, "init_from_data"):
            images = self.x[self.train_idx[:, :min(DATA_INIT_IMAGES, self.n_train)]]
        return self._init(self.init_keys, self.hparams, images)

    def abstract_state(self) -> RunState:
        """Shapes, dtypes and shardings of the run state, without computing it (for restoring)."""
        return abstract_run_state(self.cfg, self.members, self.mesh)

    def train_epoch(self, state: RunState, epoch: int, progress: Callable[[int, int], None] | None = None,
                    *, start_step: int = 0, totals: dict | None = None,
                    stop: Callable[[], bool] | None = None) -> tuple[RunState, dict, int]:
        """Trains epoch `epoch` (0-based) of every member from step `start_step`, adding to `totals`
        (metric sums [M] of the steps before it). Between jitted calls, `stop()` may end the epoch
        early. Returns (state, metric sums [M] on the host, steps done)."""
        batches = self._batches(self.data_keys, self.train_idx, epoch)
        train_state, done = state.train, start_step
        for start in range(start_step, self.steps_per_epoch, self.segment):
            if stop is not None and done > start_step and stop():
                break
            train_state, sums = self._run_steps(train_state, self.x, self.y,
                                                batches[:, start:start + self.segment], self.loop_keys,
                                                self.data_keys)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
            done = start + self.segment
            if progress is not None:
                progress(done, self.steps_per_epoch)
        return state.replace(train=train_state), jax.device_get(totals), done

    def validate(self, variables) -> dict:
        """Each member's loss and accuracy on its own validation split ({name: [M]})."""
        return self.evaluate(variables, self.x, self.y, self.val_idx)

    def epochs(self, state: RunState, start_epoch: int = 0,
               progress: Callable[[int, int, int], None] | None = None, *,
               resume: tuple[int, dict] | None = None,
               stop: Callable[[], bool] | None = None) -> Iterator[tuple[EpochResult, RunState]]:
        """Trains epochs start_epoch .. cfg.epochs-1, yielding each epoch's result and run state.

        progress, if given, is called as progress(epoch (1-based), done_steps, total_steps).
        resume: (steps done, metric sums) of an interrupted epoch `start_epoch`, whose state
        `state` is. stop: asked between jitted calls; when it says yes, `Interrupted` is raised
        with what `save_interrupted` needs to finish the epoch later exactly as if never stopped.
        """
        peak_lr = np.asarray(self.hparams.lr)
        for epoch in range(start_epoch, self.cfg.epochs):
            lr = peak_lr * float(self.lr_shape(epoch * self.steps_per_epoch))
            start = time.perf_counter()
            epoch_progress = None if progress is None else functools.partial(progress, epoch + 1)
            start_step, totals = resume if resume is not None and epoch == start_epoch else (0, None)
            state, sums, done = self.train_epoch(state, epoch, epoch_progress, start_step=start_step,
                                                 totals=totals, stop=stop)
            jax.block_until_ready(state)
            if done < self.steps_per_epoch:
                raise Interrupted(epoch, done, sums, state)
            seconds = time.perf_counter() - start
            train_loss = sums["loss"] / sums["count"]
            bad = [(m.seed, loss) for m, loss in zip(self.members, train_loss) if not math.isfinite(loss)]
            if bad:
                raise train.TrainingError(
                    f"the training loss became {bad[0][1]} in epoch {epoch + 1} (member seed "
                    f"{bad[0][0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); lower the learning "
                    "rate (lr) or check the data (the last good checkpoint is kept).")
            val = self.validate(train.variables_of(state.train))
            state = self._keep_best(state, jnp.asarray(val["accuracy"], jnp.float32), epoch + 1)
            yield EpochResult(
                epoch=epoch + 1, seconds=seconds,
                images_per_second=float(sums["count"].sum()) * (1 - start_step / self.steps_per_epoch) / seconds,
                lr=lr.tolist(), train_loss=train_loss.tolist(),
                train_accuracy=(sums["correct"] / sums["count"]).tolist(),
                val_loss=val["loss"].tolist(), val_accuracy=val["accuracy"].tolist()), state


class _Programs(NamedTuple):
    model: Any
    init: Callable
    run_steps: Callable
    batches: Callable
    keep_best: Callable
    evaluate: Callable
    predict: Callable


@functools.lru_cache(maxsize=16)
def _programs(cfg: train.TrainConfig, steps_per_epoch: int, n_train: int, mesh, member_execution: str) -> _Programs:
    """The jitted programs of a Trainer, shared by every Trainer with the same arguments.

    jax.jit caches what it traced and compiled per function object, so Trainers that build their
    own closures trace and compile everything again; sharing the function objects lets a second
    Trainer of the same configuration (another seed, a resumed run, a sweep's shape group in the
    same process, the next test) start without tracing. `cfg` comes with its seed fields reset:
    seeds only enter the programs as arguments (the run keys) and shapes (the member axis).
    """
    model = train.build_model(cfg)
    by_member = sharding.member_sharding(mesh)
    tx = train.make_optimizer(cfg, steps_per_epoch)  # structure only; values come per member
    init_one = functools.partial(train.init_state, model, tx)
    run_steps = train.make_run_steps(train.make_train_step(model, cfg, steps_per_epoch))

    def member_batches(data_key, train_idx, epoch):
        return train_idx[train.epoch_batches(data_key, epoch, n_train, cfg.batch, cfg.epoch_passes)]

    return _Programs(
        model=model,
        init=jax.jit(jax.vmap(Trainer._init_run_state(init_one)), out_shardings=by_member),
        run_steps=jax.jit(over_members(run_steps, (0, None, None, 0, 0, 0), member_execution),
                          donate_argnums=(0,), out_shardings=by_member),
        # The epoch is traced (fold_in takes an array), so one program serves every epoch.
        batches=jax.jit(jax.vmap(member_batches, in_axes=(0, 0, None)),
                        out_shardings=sharding.batch_sharding(mesh)),
        keep_best=jax.jit(_keep_best, donate_argnums=(0,), out_shardings=by_member),
        evaluate=make_member_evaluate(model, cfg.eval_batch, member_execution),
        predict=make_member_predict(model, cfg.eval_batch, member_execution))


class Interrupted(Exception):
    """Training stopped between two jitted calls of epoch `epoch` (0-based) on request."""

    def __init__(self, epoch: int, steps_done: int, sums: dict, state: RunState):
        super().__init__(f"stopped in epoch {epoch + 1} after {steps_done} steps")
        self.epoch, self.steps_done, self.sums, self.state = epoch, steps_done, sums, state


def abstract_run_state(cfg: train.TrainConfig, members: Sequence[Member], mesh) -> RunState:
    """Shapes, dtypes and shardings (member axis over `mesh`) of the run state of `members`.

    Needs no data: what a checkpoint is restored against when only the variables are wanted.
    """
    model = train.build_model(cfg)
    tx = train.make_optimizer(cfg, 1)     # the state's structure does not depend on the step count
    init = jax.vmap(Trainer._init_run_state(functools.partial(train.init_state, model, tx)))
    keys = jax.vmap(train.run_keys)(jnp.asarray([m.seed for m in members])).init
    hparams = _stack([train.HParams.create(cfg, **m.hparams) for m in members])
    shapes = jax.eval_shape(init, keys, hparams)
    by_member = sharding.member_sharding(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=by_member), shapes)


def _keep_best(state: RunState, val_accuracy, epoch) -> RunState:
    """Members whose validation accuracy beat their best take the current variables as best."""
    better = val_accuracy > state.best_val_accuracy

    def pick(new, old):
        return jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return state.replace(
        best=jax.tree.map(pick, train.variables_of(state.train), state.best),
        best_val_accuracy=jnp.where(better, val_accuracy, state.best_val_accuracy),
        best_epoch=jnp.where(better, epoch, state.best_epoch))
