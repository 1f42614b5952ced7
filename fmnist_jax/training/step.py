"""One member's training as pure functions: hyper-parameters, state, optimizer, the train step.

Everything here works on one member (one seed, one set of hyper-parameters); `programs` runs it
over the member axis (`members.over_members`), so a single run is an ensemble of one.

Randomness: one root key per member, ``jax.random.key(seed)``, split into init / data / loop keys.
Epoch e shuffles with ``fold_in(data_key, e)``; step s augments and drops out with
``fold_in(loop_key, s)``; per-image draws that must stay fixed across epochs (alternating flips)
come from `image_key(data_key)`. Nothing else is random, so the same seed on the same machine gives
the same bits, and a run resumed from a checkpoint continues exactly as if never stopped.

Hyper-parameters that do not change shapes (`HParams`) live in the state as arrays, not in the
compiled program, so members with different learning rates or dropout share one program.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmnist_jax import models
from fmnist_jax.config import HPARAM_NAMES, TrainConfig, check_hparams
from fmnist_jax.data import augment as augment_lib
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError, UserError
from fmnist_jax.models import layers
from fmnist_jax.models.layers import preprocess
from fmnist_jax.training import optim

log = logging.getLogger(__name__)

class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


@flax.struct.dataclass
class HParams:
    """The hyper-parameters that do not change shapes, as float32 arrays (traced, per member)."""
    lr: jax.Array
    weight_decay: jax.Array
    dropout_scale: jax.Array
    erase_p: jax.Array
    label_smoothing: jax.Array

    @classmethod
    def create(cls, cfg: "TrainConfig", **overrides: float) -> "HParams":
        """The config's values with `overrides` (names from HPARAM_NAMES), checked."""
        unknown = set(overrides) - set(HPARAM_NAMES)
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"is not a hyper-parameter a member can override; "
                                                  f"choose from {', '.join(HPARAM_NAMES)}.")
        values = {name: float(overrides.get(name, getattr(cfg, name))) for name in HPARAM_NAMES}
        check_hparams(**values)
        return cls(**{name: np.float32(v) for name, v in values.items()})


@flax.struct.dataclass
class TrainState:
    """The whole training state of one member: a pytree, saved and restored as one.

    `batch_stats` holds every variable of the model that the optimizer does not train: batch-norm
    statistics, and fixed layers such as the speedrun net's data-initialised whitening. The
    optimizer state may hold a moving average of the parameters (`optim.params_ema`), which
    `variables_of` then returns in place of the parameters.
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    hparams: HParams


class RunKeys(NamedTuple):
    init: jax.Array
    data: jax.Array
    loop: jax.Array


def run_keys(seed: int) -> RunKeys:
    """The run's three independent key streams, all from ``jax.random.key(seed)``."""
    return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int, peak=None) -> optax.Schedule:
    """The configured schedule reaching `peak` (default cfg.lr; may be a traced value).

    Every schedule here is proportional to its peak, so it is built with peak 1 and scaled:
    optax's own constructors branch on the peak in Python and cannot take a traced one.
    """
    peak = cfg.lr if peak is None else peak
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        shape = (lambda step: jnp.minimum(step / warmup, 1.0)) if warmup else (lambda step: jnp.ones_like(step, jnp.float32))
    elif cfg.schedule == "cosine":
        shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(total, warmup + 1))
    else:
        shape = optax.cosine_onecycle_schedule(max(total, 1), 1.0)
    return lambda step: peak * shape(step)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, hparams: HParams | None = None
                   ) -> optax.GradientTransformation:
    """Adam (default), AdamW, SGD with momentum or Muon (`optim.muon`: its Adam for biases, norms
    and the head at cfg.muon_aux_lr, on the same schedule), on the configured schedule.

    Learning rate and weight decay come from `hparams` (default: the config's), which may be
    traced: the optimizer is rebuilt inside the step from the member's values, and its state has
    the same structure whatever they are. The decay term is always present (adding 0 * params
    is exact), so members with and without weight decay share one program.

    cfg.bias_lr_scale != 1 chains `optim.scale_bias_updates` and cfg.ema_decay > 0 chains
    `optim.params_ema` after the optimizer; without them the chain (and its state's structure,
    hence old checkpoints) is exactly what it always was.
    """
    hp = hparams if hparams is not None else HParams.create(cfg)
    lr = learning_rate_schedule(cfg, steps_per_epoch, hp.lr)
    if cfg.optimizer == "adam":
        # L2 penalty through the gradient, as Keras' kernel_regularizer.
        tx = optax.chain(optax.add_decayed_weights(hp.weight_decay), optax.adam(lr, eps=cfg.adam_eps))
    elif cfg.optimizer == "adamw":
        tx = optax.adamw(lr, eps=cfg.adam_eps, weight_decay=hp.weight_decay)
    elif cfg.optimizer == "muon":
        aux_lr = learning_rate_schedule(cfg, steps_per_epoch, cfg.muon_aux_lr)
        tx = optim.muon(lr, aux_lr, cfg.momentum, hp.weight_decay, datasets.NUM_CLASSES)
    else:
        tx = optax.chain(optax.add_decayed_weights(hp.weight_decay),
                         optax.sgd(lr, momentum=cfg.momentum, nesterov=True))
    extras = []
    if cfg.bias_lr_scale != 1.0:
        extras.append(optim.scale_bias_updates(cfg.bias_lr_scale))
    if cfg.ema_decay > 0:
        extras.append(optim.params_ema(cfg.ema_decay))   # last: it averages the parameters after the update
    return optax.chain(tx, *extras) if extras else tx


def build_model(cfg: TrainConfig) -> nn.Module:
    """The config's zoo model with its arguments, its convolution implementation resolved for this backend."""
    return models.create(cfg.model, **cfg.model_args, conv_impl=layers.resolve_conv_impl(cfg.conv_impl))


def augment_options(cfg: TrainConfig, erase_p=None) -> dict:
    """Each transform's keyword arguments from the config; `erase_p` (default cfg.erase_p) may be traced."""
    return {"erase": {"p": cfg.erase_p if erase_p is None else erase_p, "area": cfg.erase_area,
                      "aspect": cfg.erase_aspect, "fill_range": (0.0, cfg.erase_max), "fill": cfg.erase_fill,
                      "sampler": cfg.erase_sampler},
            "translate": {"pixels": cfg.translate_pixels}, "rotate": {"degrees": cfg.rotate_degrees},
            "vshift": {"fraction": cfg.vshift_fraction},
            "brightness": {"low": cfg.brightness_range[0], "high": cfg.brightness_range[1]}}


def build_augment(cfg: TrainConfig, erase_p=None):
    """The config's augmentation pipeline; `erase_p` (default cfg.erase_p) may be traced."""
    return augment_lib.pipeline(cfg.augment, **augment_options(cfg, erase_p))


def l2_penalty(model: nn.Module, params) -> jax.Array:
    """Sum of squares of the kernels `model.regularized(path)` marks (Keras' kernel_regularizer=l2)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    marked = [leaf for path, leaf in leaves
              if model.regularized(tuple(getattr(k, "key", str(k)) for k in path))]
    return sum((jnp.sum(jnp.square(leaf)) for leaf in marked), jnp.zeros((), jnp.float32))


# The largest value of a 32-bit fold_in: epoch numbers (the other use of the data key) never reach it.
_IMAGE_STREAM = 0xFFFFFFFF


def image_key(data_key):
    """The key of per-image draws that stay fixed for the whole run (alternating flips' first flip)."""
    return jax.random.fold_in(data_key, jnp.uint32(_IMAGE_STREAM))


def augment_batch(cfg: TrainConfig, steps_per_epoch: int, key, images, step, index=None, image_key=None,
                  erase_p=None):
    """The training view of a batch: uint8 images [B, 28, 28] preprocessed, then augmented.

    Step `step` is in epoch step // steps_per_epoch; with `index` (each example's index in the
    training pool) and `image_key` (see `image_key`), per-image transforms (alt_flip) know which
    image and which epoch they see. `erase_p` (default cfg.erase_p) may be traced.
    """
    where = None if index is None else augment_lib.Where(index, step // steps_per_epoch, image_key)
    return build_augment(cfg, erase_p)(key, preprocess(images), where)


def init_state(model: nn.Module, tx: optax.GradientTransformation, key, hparams: HParams,
               images=None) -> TrainState:
    """Fresh parameters, batch statistics and optimizer state, carrying the member's hyper-parameters.

    A model with an ``init_from_data(variables, images) -> variables`` method (the speedrun
    net's whitening layer) is then initialised from `images` (uint8 [n, 28, 28], the member's
    training images) when they are given; without them it keeps its data-free initialisation
    (enough for shapes, as `programs.abstract_run_state` needs).
    """
    params_key, dropout_key = jax.random.split(key)
    variables = model.init({"params": params_key, "dropout": dropout_key},
                           jnp.zeros((1, 28, 28, 1), jnp.float32), train=False)
    if images is not None and hasattr(model, "init_from_data"):
        variables = model.init_from_data(variables, images)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      hparams=jax.tree.map(jnp.asarray, hparams))


def cross_entropy(logits, labels, label_smoothing=0.0):
    """Per-example softmax cross-entropy with label smoothing (0 leaves the targets exactly one-hot)."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def make_train_step(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """train_step(state, images uint8 [B,28,28], labels [B], key, index=None, image_key=None)
    -> (state, metric sums).

    The optimizer, erasing probability, dropout strength and label smoothing are read from
    state.hparams, so one compiled step serves members with different values. `index` (each
    example's index in the training pool) and `image_key` (see `image_key`) are what per-image
    augmentations (alt_flip) need; the epoch is state.step // steps_per_epoch.
    """

    def train_step(state: TrainState, images, labels, key, index=None, image_key=None):
        hp = state.hparams
        tx = make_optimizer(cfg, steps_per_epoch, hp)
        aug_key, dropout_key = jax.random.split(key)
        x = augment_batch(cfg, steps_per_epoch, aug_key, images, state.step, index, image_key, hp.erase_p)

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True,
                dropout_scale=hp.dropout_scale, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
            loss = cross_entropy(logits, labels, hp.label_smoothing)
            if cfg.l2:          # the regularized kernels' penalty is part of every example's loss
                loss = loss + cfg.l2 * l2_penalty(model, params)
            return loss.mean(), (logits, loss, updates)

        grads, (logits, loss, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
                                  batch_stats=updates.get("batch_stats", state.batch_stats),
                                  opt_state=opt_state)
        metrics = {"loss": loss.sum(), "correct": (logits.argmax(-1) == labels).sum(),
                   "count": jnp.asarray(labels.shape[0], jnp.int32)}
        return new_state, metrics

    return train_step


def make_run_steps(train_step):
    """run_steps(state, x, y, batch_idx [S, B], loop_key, data_key) -> (state, summed metrics): a
    scan of S steps; each step gets its examples' pool indices and `image_key(data_key)`."""

    def run_steps(state, x, y, batch_idx, loop_key, data_key):
        fixed_key = image_key(data_key)

        def body(state, idx):
            key = jax.random.fold_in(loop_key, state.step)
            state, metrics = train_step(state, x[idx], y[idx], key, idx, fixed_key)
            return state, metrics

        state, metrics = jax.lax.scan(body, state, batch_idx)
        return state, jax.tree.map(lambda m: m.sum(0), metrics)

    return run_steps


def epoch_batches(data_key, epoch: int, n: int, batch_size: int, passes: int = 1) -> jax.Array:
    """[steps, batch] example indices of one epoch: a fresh permutation, the remainder dropped.

    With `passes` > 1 the epoch is that many permutations one after another (each example
    `passes` times, in fresh orders), batched across their seams; the first is the one-pass
    epoch's permutation, so `passes=1` is exactly the single-pass epoch.
    """
    steps = passes * n // batch_size
    first = jax.random.fold_in(data_key, epoch)
    keys = [first] + [jax.random.fold_in(first, p) for p in range(1, passes)]
    perm = jnp.concatenate([jax.random.permutation(k, n) for k in keys])
    return perm[: steps * batch_size].reshape(steps, batch_size)


def variables_of(state: TrainState) -> dict:
    """The variables `model.apply` needs, from a state: the parameters' moving average in place
    of the parameters when the optimizer keeps one (TrainConfig.ema_decay), the batch statistics
    as trained."""
    ema = optim.ema_params(state.opt_state)
    return {"params": state.params if ema is None else ema, "batch_stats": state.batch_stats}


def segment_length(steps: int, target_segments: int = 10, min_steps: int = 8) -> int:
    """Steps per jitted call: the smallest divisor of `steps` that is at least `min_steps` and
    splits the epoch into at most about `target_segments` calls.

    Equal segments mean one compiled program per epoch shape, and a progress report between them.
    Each call has a fixed cost on CPU (see benchmarks/README.md), so calls are never shorter than
    `min_steps` steps.
    """
    floor = min(max(min_steps, steps / target_segments), steps)
    return min(g for g in range(1, steps + 1) if steps % g == 0 and g >= floor)
