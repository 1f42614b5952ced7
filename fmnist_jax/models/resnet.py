"""Residual networks for 28x28 inputs: seed 004's small ResNet, pre-activation ResNets, WideResNets."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from fmnist_jax.models.layers import BatchNorm, Conv, Dense, Dropout, preprocess, record


class BasicBlock(nn.Module):
    """Post-activation block (conv-BN-ReLU-conv-BN + shortcut, ReLU), as in the original ResNet."""
    features: int
    strides: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool):
        y = Conv(self.features, strides=(self.strides,) * 2, use_bias=False, impl=self.conv_impl)(x)
        y = record(self, "conv1", nn.relu(BatchNorm(use_running_average=not train)(y)))
        y = Conv(self.features, use_bias=False, impl=self.conv_impl)(y)
        y = BatchNorm(use_running_average=not train)(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = Conv(self.features, (1, 1), (self.strides,) * 2, use_bias=False, impl=self.conv_impl)(x)
            x = record(self, "conv_shortcut", BatchNorm(use_running_average=not train)(x))
        return record(self, "conv2", nn.relu(x + y))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016): BN-ReLU-conv twice; optional dropout between."""
    features: int
    strides: int = 1
    dropout: float = 0.0
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        pre = nn.relu(BatchNorm(use_running_average=not train)(x))
        shortcut = x
        if x.shape[-1] != self.features or self.strides != 1:
            shortcut = Conv(self.features, (1, 1), (self.strides,) * 2, use_bias=False, impl=self.conv_impl)(pre)
            record(self, "conv_shortcut", shortcut)
        y = Conv(self.features, strides=(self.strides,) * 2, use_bias=False, impl=self.conv_impl)(pre)
        y = record(self, "conv1", nn.relu(BatchNorm(use_running_average=not train)(y)))
        if self.dropout:
            y = Dropout(self.dropout, deterministic=not train)(y, dropout_scale)
        y = Conv(self.features, use_bias=False, impl=self.conv_impl)(y)
        return record(self, "conv2", shortcut + y)


class ResNet(nn.Module):
    """A stem conv, stages of blocks (stride 2 between stages), global average pool, dense."""
    stage_sizes: Sequence[int]
    widths: Sequence[int]
    preact: bool = True
    dropout: float = 0.0
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = Conv(self.widths[0], use_bias=False, impl=self.conv_impl)(preprocess(x))
        if not self.preact:
            x = nn.relu(BatchNorm(use_running_average=not train)(x))
        record(self, "conv1", x)
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for b in range(blocks):
                strides = 2 if stage > 0 and b == 0 else 1
                if self.preact:
                    x = PreActBlock(width, strides, self.dropout, self.conv_impl)(
                        x, train=train, dropout_scale=dropout_scale)
                else:
                    x = BasicBlock(width, strides, self.conv_impl)(x, train=train)
        if self.preact:
            x = nn.relu(BatchNorm(use_running_average=not train)(x))
        return Dense(self.num_classes)(record(self, "features", x.mean(axis=(1, 2))))   # global average pool


def wide_resnet(depth: int = 16, width: int = 4, dropout: float = 0.0, num_classes: int = 10,
                conv_impl: str = "auto") -> ResNet:
    """WRN-depth-width (Zagoruyko & Komodakis 2016): (depth - 4) / 6 blocks per stage."""
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}.")
    n = (depth - 4) // 6
    return ResNet((n, n, n), (16 * width, 32 * width, 64 * width), preact=True, dropout=dropout,
                  num_classes=num_classes, conv_impl=conv_impl)
