"""Pure-functional training: a pytree state, a jitted train step, epochs as scans on the device.

Randomness: one root key per run, ``jax.random.key(seed)``, split into init / data / loop keys.
Epoch e shuffles with ``fold_in(data_key, e)``; step s augments and drops out with
``fold_in(loop_key, s)``. Nothing else is random, so the same seed on the same machine gives
the same bits, and a run resumed from a checkpoint continues exactly as if never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, Iterator, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmnist_jax import augment as augment_lib
from fmnist_jax import models
from fmnist_jax.models.layers import preprocess

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in config.json)."""
    model: str = "seed002"
    epochs: int = 100
    batch_size: int = 250
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    momentum: float = 0.9
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()
    erase_p: float = 0.5
    val_fraction: float = 0.15
    split: str = "random"          # random | stratified | ordered (seed 002: the last 15% validate)
    seed: int = 0
    train_limit: int = 0
    eval_batch_size: int = 1000

    def validate(self) -> None:
        """Raises ValueError with one sentence for an impossible configuration."""
        if self.model not in models.REGISTRY:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(models.names())}.")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}.")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval batch size must be at least 1, got {self.eval_batch_size}.")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.label_smoothing}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"validation fraction must be in (0, 1), got {self.val_fraction}.")
        if self.split not in ("random", "stratified", "ordered"):
            raise ValueError(f"unknown split {self.split!r}; choose random, stratified or ordered.")
        augment_lib.parse(self.augment)


@flax.struct.dataclass
class TrainState:
    """The whole training state: a pytree, saved and restored as one."""
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


class RunKeys(NamedTuple):
    init: jax.Array
    data: jax.Array
    loop: jax.Array


def run_keys(seed: int) -> RunKeys:
    """The run's three independent key streams, all from ``jax.random.key(seed)``."""
    return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        if warmup:
            return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup),
                                         optax.constant_schedule(cfg.lr)], [warmup])
        return optax.constant_schedule(cfg.lr)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1))
    return optax.cosine_onecycle_schedule(max(total, 1), cfg.lr)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (default), AdamW or SGD with momentum, on the configured schedule."""
    lr = learning_rate_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adam":
        tx = optax.adam(lr)
        if cfg.weight_decay:  # L2 penalty through the gradient, as Keras' kernel_regularizer
            tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
        return tx
    if cfg.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=cfg.weight_decay)
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay) if cfg.weight_decay else optax.identity(),
                       optax.sgd(lr, momentum=cfg.momentum, nesterov=True))


def build_model(cfg: TrainConfig) -> nn.Module:
    return models.create(cfg.model)


def build_augment(cfg: TrainConfig):
    return augment_lib.pipeline(cfg.augment, erase={"p": cfg.erase_p})


def init_state(model: nn.Module, tx: optax.GradientTransformation, key) -> TrainState:
    """Fresh parameters, batch statistics and optimizer state."""
    params_key, dropout_key = jax.random.split(key)
    variables = model.init({"params": params_key, "dropout": dropout_key},
                           jnp.zeros((1, 28, 28, 1), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy with optional label smoothing."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    augment_fn: Callable, label_smoothing: float = 0.0):
    """train_step(state, images uint8 [B,28,28], labels [B], key) -> (state, metric sums)."""

    def train_step(state: TrainState, images, labels, key):
        aug_key, dropout_key = jax.random.split(key)
        x = augment_fn(aug_key, preprocess(images))

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, x, train=True,
                rngs={"dropout": dropout_key}, mutable=["batch_stats"])
            loss = cross_entropy(logits, labels, label_smoothing)
            return loss.mean(), (logits, loss, updates)

        grads, (logits, loss, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
                               batch_stats=updates.get("batch_stats", state.batch_stats),
                               opt_state=opt_state)
        metrics = {"loss": loss.sum(), "correct": (logits.argmax(-1) == labels).sum(),
                   "count": jnp.asarray(labels.shape[0], jnp.int32)}
        return new_state, metrics

    return train_step


def make_run_steps(train_step):
    """run_steps(state, x, y, batch_idx [S, B], loop_key) -> (state, summed metrics): a scan of S steps."""

    def run_steps(state, x, y, batch_idx, loop_key):
        def body(state, idx):
            key = jax.random.fold_in(loop_key, state.step)
            state, metrics = train_step(state, x[idx], y[idx], key)
            return state, metrics

        state, metrics = jax.lax.scan(body, state, batch_idx)
        return state, jax.tree.map(lambda m: m.sum(0), metrics)

    return run_steps


def epoch_batches(data_key, epoch: int, n: int, batch_size: int) -> jax.Array:
    """[steps, batch] example indices of one epoch: a fresh permutation, the remainder dropped."""
    steps = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
    return perm[: steps * batch_size].reshape(steps, batch_size)


def make_eval_step(model: nn.Module):
    """eval_step(variables, images, labels, mask) -> sums of loss, correct and count over mask."""

    def eval_step(variables, images, labels, mask):
        logits = model.apply(variables, preprocess(images), train=False)
        loss = cross_entropy(logits, labels)
        return {"loss": (loss * mask).sum(), "correct": ((logits.argmax(-1) == labels) * mask).sum().astype(jnp.float32),
                "count": mask.sum()}

    return eval_step


def _padded_batches(n: int, batch_size: int):
    batch_size = min(batch_size, max(n, 1))
    steps = math.ceil(n / batch_size)
    idx = np.arange(steps * batch_size)
    mask = idx < n
    return np.minimum(idx, n - 1).reshape(steps, batch_size), mask.reshape(steps, batch_size)


def make_evaluate(model: nn.Module, batch_size: int):
    """evaluate(variables, x, y) -> {'loss', 'accuracy', 'count'}: exact over a partial last batch."""
    eval_step = make_eval_step(model)

    @jax.jit
    def sums(variables, x, y, idx, mask):
        def body(carry, inputs):
            i, m = inputs
            out = eval_step(variables, x[i], y[i], m)
            return jax.tree.map(jnp.add, carry, out), None
        zero = {name: jnp.zeros((), jnp.float32) for name in ("loss", "correct", "count")}
        total, _ = jax.lax.scan(body, zero, (idx, mask.astype(jnp.float32)))
        return total

    def evaluate(variables, x, y):
        idx, mask = _padded_batches(len(y), batch_size)
        total = jax.device_get(sums(variables, x, y, idx, mask))
        count = float(total["count"])
        return {"loss": float(total["loss"]) / count, "accuracy": float(total["correct"]) / count,
                "count": int(count)}

    return evaluate


def make_predict(model: nn.Module, batch_size: int):
    """predict(variables, x) -> logits [N, 10] as a numpy array, in batches."""

    @jax.jit
    def logits_of(variables, images):
        return model.apply(variables, preprocess(images), train=False)

    def predict(variables, x):
        idx, _ = _padded_batches(len(x), batch_size)
        out = [np.asarray(logits_of(variables, x[i])) for i in idx]
        return np.concatenate(out)[: len(x)]

    return predict


def variables_of(state: TrainState) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def segment_length(steps: int, target_segments: int = 10) -> int:
    """The largest divisor of `steps` that splits an epoch into at least `target_segments` calls.

    Equal segments mean one compiled program per epoch shape, and a progress report between them.
    """
    best = 1
    for g in range(1, steps + 1):
        if steps % g == 0 and steps // g >= min(target_segments, steps):
            best = g
    return best


@dataclasses.dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_second: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Trainer:
    """Holds the compiled programs of one configuration and runs epochs on device-resident data.

    Use: ``t = Trainer(cfg, x_train, y_train, x_val, y_val)``; ``state = t.init()``;
    ``for result, state in t.epochs(state, start_epoch): ...``.
    """

    def __init__(self, cfg: TrainConfig, x_train, y_train, x_val, y_val):
        cfg.validate()
        if len(y_train) < cfg.batch_size:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the training set "
                             f"({len(y_train)} images).")
        self.cfg = cfg
        self.keys = run_keys(cfg.seed)
        self.model = build_model(cfg)
        self.steps_per_epoch = len(y_train) // cfg.batch_size
        self.schedule = learning_rate_schedule(cfg, self.steps_per_epoch)
        self.tx = make_optimizer(cfg, self.steps_per_epoch)
        self.x_train, self.y_train = jax.device_put(x_train), jax.device_put(y_train.astype(np.int32))
        self.x_val, self.y_val = jax.device_put(x_val), jax.device_put(y_val.astype(np.int32))
        train_step = make_train_step(self.model, self.tx, build_augment(cfg), cfg.label_smoothing)
        self.run_steps = jax.jit(make_run_steps(train_step), donate_argnums=(0,))
        self.evaluate = make_evaluate(self.model, cfg.eval_batch_size)
        self.segment = segment_length(self.steps_per_epoch)

    def init(self) -> TrainState:
        return init_state(self.model, self.tx, self.keys.init)

    def train_epoch(self, state: TrainState, epoch: int, progress: Callable[[int, int], None] | None = None):
        """One epoch (0-based `epoch`); returns (state, summed train metrics)."""
        batches = epoch_batches(self.keys.data, epoch, len(self.y_train), self.cfg.batch_size)
        totals = None
        for start in range(0, self.steps_per_epoch, self.segment):
            state, sums = self.run_steps(state, self.x_train, self.y_train,
                                         batches[start:start + self.segment], self.keys.loop)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
            if progress is not None:
                progress(start + self.segment, self.steps_per_epoch)
        return state, jax.device_get(totals)

    def epochs(self, state: TrainState, start_epoch: int = 0,
               progress: Callable[[int, int, int], None] | None = None) -> Iterator[tuple[EpochResult, TrainState]]:
        """Trains epochs start_epoch .. cfg.epochs-1, yielding each epoch's result and state.

        progress, if given, is called as progress(epoch (1-based), done_steps, total_steps).
        """
        for epoch in range(start_epoch, self.cfg.epochs):
            lr = float(self.schedule(int(state.step)))
            start = time.perf_counter()
            epoch_progress = None if progress is None else functools.partial(progress, epoch + 1)
            state, sums = self.train_epoch(state, epoch, epoch_progress)
            jax.block_until_ready(state)
            seconds = time.perf_counter() - start
            train_loss = float(sums["loss"]) / float(sums["count"])
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}; lower --lr or "
                    "check the data (the last good checkpoint is kept).")
            val = self.evaluate(variables_of(state), self.x_val, self.y_val)
            yield EpochResult(
                epoch=epoch + 1, train_loss=train_loss,
                train_accuracy=float(sums["correct"]) / float(sums["count"]),
                val_loss=val["loss"], val_accuracy=val["accuracy"], lr=lr, seconds=seconds,
                images_per_second=float(sums["count"]) / seconds), state
