"""A small Inception-style network trained from scratch.

Seed 004 fine-tuned an ImageNet-pretrained InceptionV3; pretrained weights cannot be fetched
offline and 28x28 inputs are far below InceptionV3's 75x75 minimum, so this keeps the idea
(parallel 1x1 / 3x3 / 5x5 / pooled branches, concatenated) at Fashion-MNIST's scale.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from fmnist_jax.models.layers import BatchNorm, Conv, Dense, Dropout, max_pool, preprocess, record


class ConvBN(nn.Module):
    features: int
    kernel: int = 3
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = Conv(self.features, (self.kernel, self.kernel), use_bias=False, impl=self.conv_impl)(x)
        return record(self, "conv", nn.relu(BatchNorm(use_running_average=not train)(x)))


class InceptionBlock(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1."""
    b1: int
    b3: int
    b5: int
    bpool: int
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = functools.partial(ConvBN, conv_impl=self.conv_impl)
        one = conv(self.b1, 1)(x, train=train)
        three = conv(self.b3, 3)(conv(self.b3 // 2, 1)(x, train=train), train=train)
        five = conv(self.b5, 5)(conv(self.b5 // 2, 1)(x, train=train), train=train)
        pooled = record(self, "pool", nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME"))
        pooled = conv(self.bpool, 1)(pooled, train=train)
        return jnp.concatenate([one, three, five, pooled], axis=-1)


class InceptionNet(nn.Module):
    """Stem conv, two inception blocks, pool, two more, global average pool, dropout, dense."""
    num_classes: int = 10
    dropout: float = 0.3
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        block = functools.partial(InceptionBlock, conv_impl=self.conv_impl)
        x = ConvBN(32, 3, self.conv_impl)(preprocess(x), train=train)
        x = block(16, 32, 8, 8)(x, train=train)
        x = block(32, 48, 16, 16)(x, train=train)
        x = record(self, "pool1", max_pool(x))
        x = block(48, 64, 16, 16)(x, train=train)
        x = block(64, 96, 32, 32)(x, train=train)
        x = record(self, "pool2", max_pool(x))
        x = record(self, "features", x.mean(axis=(1, 2)))   # global average pool
        x = Dropout(self.dropout, deterministic=not train)(x, dropout_scale)
        return Dense(self.num_classes)(x)
