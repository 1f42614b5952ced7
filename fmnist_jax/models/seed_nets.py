"""The networks of the earlier projects (../shared/seeds), rebuilt in Flax.

* `Seed002Net`: the layer table of seed 002, 3,458,382 parameters with batch statistics.
* `Seed003SimpleCNN`: seed 003's two-convolution net (493,772 trainable, as its README says).
* `Seed004FourLayerCNN`: seed 004's "4 layer CNN". Its README gives no layer table, so this is a
  reconstruction: four 3x3 convolutions (32, 32, 64, 64) in two pooled stages and one hidden dense.
"""

from __future__ import annotations

import flax.linen as nn

from fmnist_jax.models.layers import BatchNorm, Conv, Dense, Dropout, flatten, max_pool, preprocess, record


class Seed002Net(nn.Module):
    """BN, conv64, BN, conv64, pool, drop, conv128, pool, drop, dense512, drop, dense256, drop, BN, dense10.

    Seed 002 does not state its dropout rates; these are the common Keras choices.
    """
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = BatchNorm(use_running_average=not train)(preprocess(x))
        x = record(self, "conv1", nn.relu(Conv(64, impl=self.conv_impl)(x)))
        x = BatchNorm(use_running_average=not train)(x)
        x = record(self, "conv2", nn.relu(Conv(64, impl=self.conv_impl)(x)))
        x = Dropout(self.conv_dropout, deterministic=not train)(record(self, "pool1", max_pool(x)), dropout_scale)
        x = record(self, "conv3", nn.relu(Conv(128, impl=self.conv_impl)(x)))
        x = Dropout(self.conv_dropout, deterministic=not train)(record(self, "pool2", max_pool(x)), dropout_scale)
        x = nn.relu(Dense(512)(flatten(x)))
        x = Dropout(self.dense_dropout, deterministic=not train)(x, dropout_scale)
        x = nn.relu(Dense(256)(x))
        x = Dropout(self.dense_dropout, deterministic=not train)(x, dropout_scale)
        x = record(self, "features", BatchNorm(use_running_average=not train)(x))
        return Dense(self.num_classes)(x)


class Seed003SimpleCNN(nn.Module):
    """BN, conv64 4x4 same, pool, drop .1, conv64 4x4 valid, pool, drop .3, dense256, drop .5, dense64, BN, dense10."""
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = BatchNorm(use_running_average=not train)(preprocess(x))
        x = record(self, "conv1", nn.relu(Conv(64, (4, 4), impl=self.conv_impl)(x)))
        x = Dropout(0.1, deterministic=not train)(record(self, "pool1", max_pool(x)), dropout_scale)
        x = record(self, "conv2", nn.relu(Conv(64, (4, 4), padding="VALID", impl=self.conv_impl)(x)))
        x = Dropout(0.3, deterministic=not train)(record(self, "pool2", max_pool(x)), dropout_scale)
        x = nn.relu(Dense(256)(flatten(x)))
        x = Dropout(0.5, deterministic=not train)(x, dropout_scale)
        x = nn.relu(Dense(64)(x))
        x = record(self, "features", BatchNorm(use_running_average=not train)(x))
        return Dense(self.num_classes)(x)


class Seed004FourLayerCNN(nn.Module):
    """Four 3x3 convolutions with batch norm in two pooled stages, dense 128, dense 10."""
    num_classes: int = 10
    conv_impl: str = "auto"
    dropout: float = 0.25

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = preprocess(x)
        for stage, features in enumerate((32, 64)):
            for i in range(2):
                x = Conv(features, use_bias=False, impl=self.conv_impl)(x)
                x = record(self, f"conv{2 * stage + i + 1}", nn.relu(BatchNorm(use_running_average=not train)(x)))
            x = Dropout(self.dropout, deterministic=not train)(record(self, f"pool{stage + 1}", max_pool(x)),
                                                               dropout_scale)
        x = record(self, "features", nn.relu(Dense(128)(flatten(x))))
        x = Dropout(2 * self.dropout, deterministic=not train)(x, dropout_scale)
        return Dense(self.num_classes)(x)
