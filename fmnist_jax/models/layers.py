"""Building blocks shared by the zoo.

`Conv` is the zoo's one convolution layer. Its parameters are laid out exactly as
`flax.linen.Conv` (kernel [kh, kw, in, out], bias [out]), so a checkpoint trained with one
implementation loads into another.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

# Keras' defaults, so the seed projects' networks behave (and count parameters) as theirs did.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)


# Keras' default initialiser (glorot_uniform), which the seed projects trained with.
KERNEL_INIT = nn.initializers.glorot_uniform()
Dense = functools.partial(nn.Dense, kernel_init=KERNEL_INIT)


class Conv(nn.Module):
    """2-D convolution over NHWC inputs with flax.linen.Conv's parameter layout."""
    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", KERNEL_INIT, (kh, kw, x.shape[-1], self.features))
        y = lax.conv_general_dilated(
            x, kernel.astype(x.dtype), tuple(self.strides), self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def max_pool(x, size: int = 2):
    return nn.max_pool(x, (size, size), strides=(size, size))


def flatten(x):
    return x.reshape(x.shape[0], -1)


def preprocess(x):
    """uint8 [N, 28, 28] or [N, 28, 28, 1] images -> float32 NHWC in [0, 1] (seed 002's /255)."""
    if x.ndim == 3:
        x = x[..., None]
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32) / 255.0
    return x
