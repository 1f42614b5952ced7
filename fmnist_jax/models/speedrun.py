"""The speedrun family: a small net built for time to accuracy on a CPU, after airbench
(Keller Jordan's fast CIFAR-10 training), for 28x28x1 images.

    whitening 3x3 (fixed, from the data) -> +/- -> act         28x28, 2 * 9 channels
    block(64):  conv3x3 -> maxpool -> BN -> act   [-> conv3x3 -> BN -> act] x (depth - 1)    -> 14x14
    block(128): the same                                                                      -> 7x7
    block(256): the same                                                                      -> 3x3
    global max pool -> dense 10 (no bias) x logit_scale

* The first layer is a fixed patch-whitening convolution (`Whiten`): its kernel comes from the
  eigen-decomposition of the covariance of the training images' 3x3 patches (`init_from_data`,
  which `train.init_state` calls with each member's training images), so the net starts from
  decorrelated, unit-variance inputs. It is stored in the "batch_stats" collection, the one that
  holds every variable the optimizer does not train, so neither gradients nor weight decay move
  it, and checkpoints, restore, export and analysis carry it like batch-norm statistics.
  Its outputs are concatenated with their negatives so that the activation after it drops nothing.
* The activation (act) is GELU, as airbench, or ReLU (`activation="relu"`, cheaper on a CPU).
* `stem_stride=2` (with `whiten_patch=4`) applies the whitening at every other position (a patch
  embedding), so the blocks run at 14 -> 7 -> 3 -> 1: a quarter of the pixels, which pays for
  wider blocks at fewer multiply-adds.
* Pooling comes right after each block's first convolution, before batch norm, so the rest of
  the block runs at the lower resolution (airbench's ConvGroup).
* Batch norm has no scale by default (`bn_scale=False`: the following convolution can absorb
  one); its shift (a "bias") is what `TrainConfig.bias_lr_scale` speeds up.
* 3x3 convolutions after the whitening layer have at least 8 input channels, so `conv_impl`
  auto runs them through the Winograd path (`layers.conv_winograd_or_hybrid`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from fmnist_jax.models import layers
from fmnist_jax.models.layers import BatchNorm, Conv, Dense, max_pool, preprocess, record

# The collection of variables the optimizer never sees (see train.TrainState).
FIXED = "batch_stats"

ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu}


def whitening_weights(images, patch: int = 3, eps: float = 5e-4):
    """(kernel [patch, patch, C, D], bias [D]) of a convolution that whitens the patches of `images`.

    images: float NHWC. With p a flattened patch (D = patch * patch * C values, in the kernel's
    row order), mu their mean and cov = U diag(lam) U^T their covariance (over every VALID patch
    position of every image), the convolution computes (p - mu) @ U diag(1 / sqrt(lam + eps'))
    with eps' = eps * mean(lam): PCA whitening, output channels ordered by decreasing variance,
    each with variance lam / (lam + eps') ~ 1. eps is relative to the mean variance, so it does
    not depend on the pixel scale; it keeps the noise of the faintest directions from being
    amplified without bound.
    """
    x = jnp.asarray(images, jnp.float32)
    shape = (patch, patch, x.shape[-1], 1)
    p = layers._patches(x, shape, (1, 1), layers._padding_pairs(x.shape, shape, (1, 1), "VALID"))
    p = p.reshape(-1, p.shape[-1])
    mean = p.mean(0)
    centred = p - mean
    cov = centred.T @ centred / p.shape[0]
    lam, vectors = jnp.linalg.eigh(cov)                       # ascending
    lam, vectors = lam[::-1], vectors[:, ::-1]
    w = vectors / jnp.sqrt(jnp.maximum(lam, 0.0) + eps * jnp.mean(lam))
    return w.reshape(patch, patch, x.shape[-1], -1), -mean @ w


class Whiten(nn.Module):
    """A fixed patch x patch convolution (SAME padding, stride `stride`) whose kernel and bias are
    set from the data (`whitening_weights`); before that, the identity on each patch (channel k =
    pixel k)."""
    patch: int = 3
    impl: str = "auto"
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        d = self.patch * self.patch * x.shape[-1]
        kernel = self.variable(FIXED, "kernel", lambda: jnp.eye(d).reshape(self.patch, self.patch, x.shape[-1], d))
        bias = self.variable(FIXED, "bias", lambda: jnp.zeros((d,)))
        conv = layers.CONV_FUNCTIONS[layers.resolve_conv_impl(self.impl)]
        return conv(x, kernel.value.astype(x.dtype), (self.stride, self.stride), "SAME") + bias.value


class SpeedrunNet(nn.Module):
    """See the module docstring. widths: one block each, each halving the resolution; depth:
    convolutions per block; whiten: the fixed whitening layer (else a trained 3x3 convolution of
    the same width, with batch norm); stem_stride: 2 makes the first layer a strided patch
    embedding, so every block runs at half the resolution (a quarter of the pixels) and can afford
    twice the channels; bn_scale: batch norm learns a scale."""
    widths: Sequence[int] = (64, 128, 256)
    depth: int = 1
    whiten: bool = True
    whiten_patch: int = 3
    whiten_eps: float = 5e-4
    stem_stride: int = 1           # 2: the first layer samples every other patch (28x28 -> 14x14)
    bn_scale: bool = False
    bn_momentum: float = 0.9       # Keras convention; faster than layers.BatchNorm's 0.99 for short runs
    logit_scale: float = 1.0
    activation: str = "gelu"       # or "relu"
    num_classes: int = 10
    conv_impl: str = "auto"

    def _act(self, x):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}.")
        return ACTIVATIONS[self.activation](x)

    def _bn(self, train: bool):
        return BatchNorm(use_running_average=not train, momentum=self.bn_momentum, use_scale=self.bn_scale)

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        del dropout_scale            # no dropout in this family
        x = preprocess(x)
        if self.whiten:
            x = Whiten(self.whiten_patch, self.conv_impl, self.stem_stride, name="whiten")(x)
            x = jnp.concatenate([x, -x], axis=-1)
        else:
            d = 2 * self.whiten_patch ** 2 * x.shape[-1]
            x = Conv(d, (self.whiten_patch,) * 2, strides=(self.stem_stride,) * 2, use_bias=False,
                     impl=self.conv_impl)(x)
            x = self._bn(train)(x)
        x = record(self, "conv0", self._act(x))
        for b, width in enumerate(self.widths):
            x = Conv(width, use_bias=False, impl=self.conv_impl)(x)
            x = self._act(self._bn(train)(max_pool(x)))
            for _ in range(self.depth - 1):
                x = self._act(self._bn(train)(Conv(width, use_bias=False, impl=self.conv_impl)(x)))
            record(self, f"conv{b + 1}", x)
        x = record(self, "features", x.max(axis=(1, 2)))      # global max pool
        return Dense(self.num_classes, use_bias=False)(x) * self.logit_scale

    def init_from_data(self, variables: dict, images) -> dict:
        """`variables` with the whitening layer set from `images` (uint8 [n, 28, 28] or NHWC);
        unchanged without a whitening layer. Pure and jittable (train.init_state calls it)."""
        if not self.whiten:
            return variables
        kernel, bias = whitening_weights(preprocess(images), self.whiten_patch, self.whiten_eps)
        fixed = dict(variables[FIXED])
        fixed["whiten"] = {"kernel": kernel, "bias": bias}
        return {**variables, FIXED: fixed}


def whitening_of(variables: dict):
    """(kernel, bias) of a speedrun net's whitening layer in `variables`."""
    w = variables[FIXED]["whiten"]
    return w["kernel"], w["bias"]
