"""Optimizer pieces that `train.make_optimizer` chains after the optimizer proper.

* `scale_bias_updates(s)`: every bias (and batch-norm shift, which Flax also names "bias") moves
  s times as far as the optimizer says; with the learning rate applied last in every optimizer
  here, that is a learning rate s times larger for those parameters.
* `muon(...)`: optax's Muon for the convolution and hidden dense kernels (their momentum
  orthogonalised by a Newton-Schulz iteration), Adam for everything else: biases, batch-norm
  scales and shifts, and the classifier head (`muon_dimension_numbers` says which is which).
* `params_ema(decay)`: an exponential moving average of the parameters, kept in the optimizer
  state (as Keras optimizers' `use_ema` does). Training never reads it; `train.variables_of`
  returns it in place of the parameters, so validation, best-epoch selection, test, predict and
  export use it.

Both are chained only when switched on, so the optimizer state of a configuration without them
keeps the structure (and checkpoints) it always had.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

# Flax's name for the bias of Dense / Conv and for BatchNorm's shift (beta).
BIAS_NAME = "bias"


def is_bias(path) -> bool:
    """Whether a parameter's key path (jax.tree_util) ends in a bias."""
    return bool(path) and getattr(path[-1], "key", None) == BIAS_NAME


def scale_bias_updates(scale: float) -> optax.GradientTransformation:
    """Multiplies the updates of bias parameters by `scale` (the others pass unchanged)."""

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(lambda path, u: u * scale if is_bias(path) else u, updates)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon_dimension_numbers(params, n_outputs: int):
    """Which parameters Muon orthogonalises, and as what matrix: None for the rest (Adam's).

    A convolution kernel [h, w, c_in, c_out] is the matrix [h * w * c_in, c_out] (the reduction
    axes first, as Muon's x @ W); a dense kernel [c_in, c_out] is itself, unless it is the head
    (c_out == n_outputs: the logits), which, as in the Muon papers and airbench, stays with Adam
    like every vector (biases, batch-norm scales and shifts).

    The head is told by its shape, not its name (the zoo's heads are `Dense_<last>` or `logits`,
    and renaming them would break committed checkpoints): a model with another 2-D kernel of
    `n_outputs` columns would send it to Adam too. tests/test_optim.py checks, for every zoo
    model, that the rule picks exactly its head.
    """
    def spec(x):
        if x.ndim == 4:
            return MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
        if x.ndim == 2 and x.shape[-1] != n_outputs:
            return MuonDimensionNumbers(reduction_axis=0, output_axis=1)
        return None
    return jax.tree.map(spec, params)


def muon(learning_rate, aux_learning_rate, momentum: float, weight_decay, n_outputs: int
         ) -> optax.GradientTransformation:
    """Muon (optax.contrib.muon, Nesterov, 5 Newton-Schulz steps) on the kernels that
    `muon_dimension_numbers` names, with decoupled `weight_decay` (times the learning rate);
    Adam at `aux_learning_rate` on the other parameters, without decay. Both rates may be schedules.

    Each orthogonalised update is scaled by sqrt(max(1, fan_out / fan_in)) (Muon's width rule), so
    its root-mean-square entry is about 1 / sqrt(fan_in): Muon's learning rate (about 0.02-0.1) is
    not Adam's (about 1e-3).
    """
    return optax.contrib.muon(
        learning_rate, beta=momentum, weight_decay=weight_decay, nesterov=True,
        adam_learning_rate=aux_learning_rate,
        muon_weight_dimension_numbers=lambda params: muon_dimension_numbers(params, n_outputs))


class EmaState(NamedTuple):
    """The moving average of the parameters and the number of updates it has seen."""
    count: jax.Array
    ema: Any


def ema_decay_at(decay: float, count):
    """The decay used at update `count` (0-based): min(decay, (1 + count) / (10 + count)).

    The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) keeps the average from
    being dominated by the random initial parameters early on: the first update keeps 10% of
    them, the tenth about 50%, and after about 10 / (1 - decay) updates the decay is `decay`.
    """
    count = jnp.asarray(count, jnp.float32)
    return jnp.minimum(decay, (1.0 + count) / (10.0 + count))


def params_ema(decay: float) -> optax.GradientTransformation:
    """Tracks ema <- d * ema + (1 - d) * new_params after every update (d from `ema_decay_at`),
    starting from the initial parameters. Updates pass unchanged; `update` needs `params`."""

    def init(params):
        # A copy: the average and the parameters must not share buffers (steps donate the state).
        return EmaState(count=jnp.zeros((), jnp.int32), ema=jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("params_ema needs the parameters: call update(updates, state, params).")
        d = ema_decay_at(decay, state.count)
        new_params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new_params)
        return updates, EmaState(count=state.count + 1, ema=ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state) -> Any | None:
    """The parameters' moving average held in `opt_state`, or None when it keeps none."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, EmaState))
             if isinstance(s, EmaState)]
    return found[0].ema if found else None
