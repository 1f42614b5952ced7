"""The networks of the earlier projects (../shared/seeds), rebuilt in Flax.

Each is read from its project's code (docs/reproductions.md has the sources); Keras' defaults
(glorot-uniform kernels, zero biases, batch norm momentum 0.99 and epsilon 1e-3) are `layers`'.

* `Seed002Net`: seed 002's `cnn_model()`, 3,458,382 parameters with batch statistics.
* `Seed003SimpleCNN`: seed 003's two-convolution net (493,772 trainable).
* `Seed004CNN`: seed 004's 4-layer CNN, 661,022 parameters (660,054 trainable), L2 on its two
  hidden dense kernels (`regularized`).
* `Seed004ResNet`: seed 004's ResNet-18-like net, 11,186,186 parameters (11,178,378 trainable), in
  fmnist_jax/models/seed004_resnet.py.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from fmnist_jax.models.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    flatten,
    max_pool,
    preprocess,
    record,
)


class Seed002Net(nn.Module):
    """BN, conv64, BN, conv64, pool, drop, conv128, pool, drop, dense512, drop, dense256, drop, BN, dense10.

    Dropout rates as seed 002's code (its run full_1, 94.74%): 0.3 and 0.4 after the two pooled
    blocks, 0.5 and 0.5 after the dense layers; its run full_2 (also 94.68% final) used
    conv_dropout=(0.2, 0.3), dense_dropout=(0.5, 0.35).
    """
    conv_dropout: Sequence[float] = (0.3, 0.4)
    dense_dropout: Sequence[float] = (0.5, 0.5)
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = BatchNorm(use_running_average=not train)(preprocess(x))
        x = record(self, "conv1", nn.relu(Conv(64, impl=self.conv_impl)(x)))
        x = BatchNorm(use_running_average=not train)(x)
        # conv -> relu -> pool as conv -> pool -> bias -> relu (`Conv`'s pool; relu commutes with the
        # max too): the same values, with the bias add and relu on a quarter of them. The recorded
        # full-map activations are computed only when asked for.
        pooled, y = Conv(64, impl=self.conv_impl)(x, pool=2)
        record(self, "conv2", nn.relu(y))
        x = Dropout(self.conv_dropout[0], deterministic=not train)(record(self, "pool1", nn.relu(pooled)), dropout_scale)
        pooled, y = Conv(128, impl=self.conv_impl)(x, pool=2)
        record(self, "conv3", nn.relu(y))
        x = Dropout(self.conv_dropout[1], deterministic=not train)(record(self, "pool2", nn.relu(pooled)), dropout_scale)
        x = nn.relu(Dense(512)(flatten(x)))
        x = Dropout(self.dense_dropout[0], deterministic=not train)(x, dropout_scale)
        x = nn.relu(Dense(256)(x))
        x = Dropout(self.dense_dropout[1], deterministic=not train)(x, dropout_scale)
        x = record(self, "features", BatchNorm(use_running_average=not train)(x))
        return Dense(self.num_classes)(x)


class Seed003SimpleCNN(nn.Module):
    """BN, conv64 4x4 same, pool, drop .1, conv64 4x4 valid, pool, drop .3, dense256, drop .5, dense64, BN, dense10."""
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = BatchNorm(use_running_average=not train)(preprocess(x))
        # conv -> relu -> pool as conv -> pool -> bias -> relu, as in Seed002Net.
        pooled, y = Conv(64, (4, 4), impl=self.conv_impl)(x, pool=2)
        record(self, "conv1", nn.relu(y))
        x = Dropout(0.1, deterministic=not train)(record(self, "pool1", nn.relu(pooled)), dropout_scale)
        pooled, y = Conv(64, (4, 4), padding="VALID", impl=self.conv_impl)(x, pool=2)
        record(self, "conv2", nn.relu(y))
        x = Dropout(0.3, deterministic=not train)(record(self, "pool2", nn.relu(pooled)), dropout_scale)
        x = nn.relu(Dense(256)(flatten(x)))
        x = Dropout(0.5, deterministic=not train)(x, dropout_scale)
        x = nn.relu(Dense(64)(x))
        x = record(self, "features", BatchNorm(use_running_average=not train)(x))
        return Dense(self.num_classes)(x)


class Seed004CNN(nn.Module):
    """4 x [conv 3x3 same, ReLU, BN, max-pool 2] of 32, 68, 128, 256 filters (28 -> 14 -> 7 -> 3 -> 1),
    dense 512, dropout 0.5, dense 256, dropout 0.5, dense 10; L2 on the two hidden dense kernels."""
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = preprocess(x)
        for i, features in enumerate((32, 68, 128, 256)):
            x = record(self, f"conv{i + 1}", nn.relu(Conv(features, impl=self.conv_impl)(x)))
            x = record(self, f"pool{i + 1}", max_pool(BatchNorm(use_running_average=not train)(x)))
        x = nn.relu(Dense(512, name="dense1")(flatten(x)))
        x = Dropout(0.5, deterministic=not train)(x, dropout_scale)
        x = nn.relu(Dense(256, name="dense2")(x))
        x = record(self, "features", Dropout(0.5, deterministic=not train)(x, dropout_scale))
        return Dense(self.num_classes, name="logits")(x)

    @staticmethod
    def regularized(path: tuple[str, ...]) -> bool:
        """Seed 004 put kernel_regularizer=l2(0.01) on its two hidden dense layers only."""
        return path[0] in ("dense1", "dense2") and path[-1] == "kernel"
