"""Scoring members on images, from `(apply_fn, variables)` alone: no training state, no data pool.

    apply_fn = scoring.inference(model)                  # (variables, float images) -> logits
    predict = scoring.make_member_predict(apply_fn, batch_size=1000)
    logits = predict(variables, x_test)                  # variables with a member axis: [M, N, 10]

Images go in as uint8 [N, 28, 28] and are preprocessed on the device. Every program scans
fixed-size batches (the last one padded and masked), so any number of images costs one
compilation per shape of the member axis.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fmnist_jax.evaluation import tta
from fmnist_jax.models.layers import preprocess
from fmnist_jax.training import sharding
from fmnist_jax.training.members import over_members
from fmnist_jax.training.step import cross_entropy

ApplyFn = Callable[[dict, jax.Array], jax.Array]


def inference(model) -> ApplyFn:
    """The model's inference function: (variables, preprocessed images) -> logits."""
    return functools.partial(model.apply, train=False)


def padded_batches(n: int, batch_size: int):
    """(idx [steps, batch], mask [steps, batch]) covering 0..n-1 once; the padding repeats n-1, masked out."""
    batch_size = min(batch_size, max(n, 1))
    steps = math.ceil(n / batch_size)
    idx = np.arange(steps * batch_size)
    mask = idx < n
    return np.minimum(idx, n - 1).reshape(steps, batch_size), mask.reshape(steps, batch_size)


def make_eval_step(apply_fn: ApplyFn):
    """eval_step(variables, images, labels, mask) -> sums of loss, correct and count over mask."""

    def eval_step(variables, images, labels, mask):
        logits = apply_fn(variables, preprocess(images))
        loss = cross_entropy(logits, labels)
        return {"loss": (loss * mask).sum(), "correct": ((logits.argmax(-1) == labels) * mask).sum().astype(jnp.float32),
                "count": mask.sum()}

    return eval_step


def make_member_evaluate(apply_fn: ApplyFn, batch_size: int, execution: str = "vmap"):
    """evaluate(variables [M], x, y, idx [M, n]) -> {'loss', 'accuracy'} float arrays [M].

    Each member is evaluated on its own examples (its validation split); exact over a partial
    last batch. `execution` runs the members as `over_members` does ("vmap" or "map").
    """
    eval_step = make_eval_step(apply_fn)

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
        positions, mask = padded_batches(idx.shape[1], batch_size)
        batched = idx[:, positions]                       # [M, steps, batch]
        total = sharding.to_host(sums(variables, x, y, batched, mask.astype(np.float32)))
        return {"loss": total["loss"] / total["count"], "accuracy": total["correct"] / total["count"]}

    return evaluate


def make_member_predict(apply_fn: ApplyFn, batch_size: int, execution: str = "vmap"):
    """predict(variables [M], x, view=tta.PLAIN) -> logits [M, N, 10] (numpy).

    `view` (a `tta.View`) predicts on that view of every image. With `views=` (a sequence of
    views) instead, predict returns a list of logits [M, N, 10], one per view, computed by one
    program: each batch is read once and its views go through the net one after another
    (`lax.map`), so a set of views costs one compilation and no more memory than one view.
    `execution` runs the members as `over_members` does ("vmap" or "map").
    """

    @functools.partial(jax.jit, static_argnames="views")
    def logits_of(variables, x, idx, views):
        def member(v):
            def body(_, i):
                images = preprocess(x[i])
                if len(views) == 1:      # no loop around the net: the program of a plain predict
                    return None, apply_fn(v, tta.apply_view(images, views[0]))[None]
                stacked = jnp.stack([tta.apply_view(images, view) for view in views])
                return None, jax.lax.map(functools.partial(apply_fn, v), stacked)
            return jax.lax.scan(body, None, idx)[1]                     # [steps, V, batch, C]
        return over_members(member, (0,), execution)(variables)

    def predict(variables, x, view: tta.View = tta.PLAIN, *, views: Sequence[tta.View] | None = None):
        chosen = (tta.View(*view),) if views is None else tuple(tta.View(*v) for v in views)
        positions, _ = padded_batches(len(x), batch_size)
        logits = sharding.to_host(logits_of(variables, x, positions, chosen))
        m, steps, v, b, c = logits.shape
        logits = logits.transpose(2, 0, 1, 3, 4).reshape(v, m, steps * b, c)[:, :, : len(x)]
        return logits[0] if views is None else list(logits)

    return predict
