"""Seed 004's ResNet, as its notebook built it (train_resnet_icdss.ipynb): 11,186,186 parameters.

A 7x7 stride-2 stem (with bias) -> BN -> ReLU at 14x14, no max-pool; four stages of two
post-activation basic blocks with 64, 128, 256, 512 filters (14 -> 7 -> 4 -> 2), the first block
of each later stage strided; every convolution has a bias and he-normal kernels; the projection
shortcuts are 1x1 stride-2 convolutions without batch norm; 2x2 average pooling (global here) and
a dense 10. L2 1e-4 went on every convolution kernel (`regularized`), none on the dense layer.

Seed 004 trained it on raw 0-255 pixels; `input_scale=255` feeds it those (the images are
otherwise scaled to [0, 1] first, as for every zoo model).
"""

from __future__ import annotations

import flax.linen as nn

from fmnist_jax.models.layers import BatchNorm, Conv, Dense, preprocess, record

HE_NORMAL = nn.initializers.he_normal()


class Seed004Block(nn.Module):
    """conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN, + the shortcut (a 1x1 strided conv when it
    changes shape), ReLU."""
    features: int
    strides: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = dict(kernel_init=HE_NORMAL, impl=self.conv_impl)
        y = Conv(self.features, strides=(self.strides,) * 2, **conv)(x)
        y = record(self, "conv1", nn.relu(BatchNorm(use_running_average=not train)(y)))
        y = BatchNorm(use_running_average=not train)(Conv(self.features, **conv)(y))
        if self.strides != 1 or x.shape[-1] != self.features:
            x = record(self, "conv_shortcut", Conv(self.features, (1, 1), (self.strides,) * 2, **conv)(x))
        return record(self, "conv2", nn.relu(x + y))


class Seed004ResNet(nn.Module):
    """See the module docstring."""
    input_scale: float = 1.0
    num_classes: int = 10
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        del dropout_scale                  # no dropout in this net
        x = preprocess(x) * self.input_scale
        x = Conv(64, (7, 7), (2, 2), kernel_init=HE_NORMAL, impl=self.conv_impl, name="stem")(x)
        x = record(self, "conv0", nn.relu(BatchNorm(use_running_average=not train)(x)))
        for stage, features in enumerate((64, 128, 256, 512)):
            for block in range(2):
                x = Seed004Block(features, 2 if stage > 0 and block == 0 else 1, self.conv_impl)(x, train=train)
        x = record(self, "features", x.mean(axis=(1, 2)))    # AveragePooling2D(2) of the 2x2 map
        return Dense(self.num_classes, kernel_init=HE_NORMAL)(x)

    @staticmethod
    def regularized(path: tuple[str, ...]) -> bool:
        """Every convolution kernel carried l2(1e-4); the dense layer none."""
        return path[-1] == "kernel" and not any(p.startswith("Dense") for p in path)
