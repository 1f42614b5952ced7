"""The compiled programs of one configuration over its members, and the run state they share.

    programs = make_programs(cfg, steps_per_epoch, n_train, mesh, execution)

builds each jitted function once for a run: `init` (fresh members), `run_steps` (a scan of
training steps of every member: the one place the member axis meets the training step, through
`members.over_members`), `batches` (an epoch's example order), `keep_best` (each member's
best-by-validation variables), and `evaluate` / `predict` (`evaluation.scoring`, from the
model's inference function and the variables alone). They are pure: data, keys and state come
in as arguments.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from fmnist_jax.config import TrainConfig
from fmnist_jax.evaluation import scoring
from fmnist_jax.training import members as members_lib
from fmnist_jax.training import sharding, step


@flax.struct.dataclass
class RunState:
    """Everything a run checkpoints; every array has the member axis first.

    `best` holds each member's parameters and batch statistics from its best epoch (highest
    validation accuracy, or lowest validation loss: TrainConfig.select; the earliest among
    equals; the last with select=final), with that epoch's validation accuracy and loss (NaN
    without a validation split); `best_epoch` is 0 before the first.
    """
    train: step.TrainState
    best: dict
    best_val_accuracy: jax.Array
    best_epoch: jax.Array
    best_val_loss: jax.Array


class Programs(NamedTuple):
    """The jitted functions of one run (see the module docstring)."""
    model: nn.Module
    init: Callable        # (init keys [M], hparams [M], images [M, n] or None) -> RunState
    run_steps: Callable   # (TrainState [M], x, y, batch idx [M, S, B], loop keys, data keys) -> (state, sums [M])
    batches: Callable     # (data keys [M], train idx [M, n], epoch) -> batch idx [M, steps, B]
    keep_best: Callable   # (RunState, val accuracy [M], val loss [M], epoch) -> RunState
    penalty: Callable     # (variables [M]) -> the L2 term of each member's loss [M] (TrainConfig.l2)
    evaluate: Callable    # scoring.make_member_evaluate
    predict: Callable     # scoring.make_member_predict


def fresh_run_state(init_member: Callable) -> Callable:
    """(key, hparams, images) -> RunState of one member: `init_member`'s state, its variables as best."""
    def init(key, hparams, images=None):
        state = init_member(key, hparams, images)
        return RunState(train=state, best=step.variables_of(state),
                        best_val_accuracy=jnp.asarray(-1.0, jnp.float32), best_epoch=jnp.asarray(0, jnp.int32),
                        best_val_loss=jnp.asarray(jnp.inf, jnp.float32))
    return init


def make_programs(cfg: TrainConfig, steps_per_epoch: int, n_train: int, mesh, execution: str) -> Programs:
    """The run's programs: `cfg`'s model and optimizer over the member axis on `mesh`.

    Seeds and hyper-parameters enter as arguments (keys and `HParams` arrays), never as
    constants, so one set of programs serves every member of a run and every epoch.
    """
    model = step.build_model(cfg)
    by_member = sharding.member_sharding(mesh)
    tx = step.make_optimizer(cfg, steps_per_epoch)  # structure only; values come per member
    run_steps = step.make_run_steps(step.make_train_step(model, cfg, steps_per_epoch))

    def member_batches(data_key, train_idx, epoch):
        return train_idx[step.epoch_batches(data_key, epoch, n_train, cfg.batch, cfg.epoch_passes)]

    apply_fn = scoring.inference(model)
    return Programs(
        model=model,
        init=jax.jit(jax.vmap(fresh_run_state(functools.partial(step.init_state, model, tx))),
                     out_shardings=by_member),
        run_steps=jax.jit(members_lib.over_members(run_steps, (0, None, None, 0, 0, 0), execution),
                          donate_argnums=(0,), out_shardings=by_member),
        # The epoch is traced (fold_in takes an array), so one program serves every epoch.
        batches=jax.jit(jax.vmap(member_batches, in_axes=(0, 0, None)),
                        out_shardings=sharding.batch_sharding(mesh)),
        keep_best=jax.jit(functools.partial(keep_best, select=cfg.select), donate_argnums=(0,),
                          out_shardings=by_member),
        penalty=jax.jit(jax.vmap(lambda v: cfg.l2 * step.l2_penalty(model, v["params"]) if cfg.l2
                                 else jnp.zeros((), jnp.float32))),
        evaluate=scoring.make_member_evaluate(apply_fn, cfg.eval_batch, execution),
        predict=scoring.make_member_predict(apply_fn, cfg.eval_batch, execution))


def member_hparams(cfg: TrainConfig, members: Sequence[members_lib.Member]) -> step.HParams:
    """Every member's hyper-parameters (the config's, with the member's overrides), stacked [M]."""
    return members_lib.stack([step.HParams.create(cfg, **m.hparams) for m in members])


def abstract_run_state(cfg: TrainConfig, members: Sequence[members_lib.Member], mesh) -> RunState:
    """Shapes, dtypes and shardings (member axis over `mesh`) of the run state of `members`.

    Needs no data and compiles nothing: what a checkpoint is restored against.
    """
    model = step.build_model(cfg)
    tx = step.make_optimizer(cfg, 1)     # the state's structure does not depend on the step count
    init = jax.vmap(fresh_run_state(functools.partial(step.init_state, model, tx)))
    keys = jax.vmap(step.run_keys)(jnp.asarray([m.seed for m in members])).init
    shapes = jax.eval_shape(init, keys, member_hparams(cfg, members))
    by_member = sharding.member_sharding(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=by_member), shapes)


def keep_best(state: RunState, val_accuracy, val_loss, epoch, select: str = "val_accuracy") -> RunState:
    """Members whose validation score beat their best (a higher accuracy, or with select="val_loss"
    a lower loss) take the current variables as best; with select="final" every epoch does (the
    scores, NaN without a validation split, are recorded as they are)."""
    if select == "final":
        better = jnp.ones_like(val_accuracy, dtype=bool)
    elif select == "val_loss":
        better = val_loss < state.best_val_loss
    else:
        better = val_accuracy > state.best_val_accuracy

    def pick(new, old):
        return jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    return state.replace(
        best=jax.tree.map(pick, step.variables_of(state.train), state.best),
        best_val_accuracy=jnp.where(better, val_accuracy, state.best_val_accuracy),
        best_epoch=jnp.where(better, epoch, state.best_epoch),
        best_val_loss=jnp.where(better, val_loss, state.best_val_loss))
