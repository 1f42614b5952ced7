"""Building blocks shared by the zoo.

`Conv` is the zoo's one convolution layer. Its parameters are laid out exactly as
`flax.linen.Conv` (kernel [kh, kw, in, out], bias [out]), so a checkpoint trained with one
implementation loads into another.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Keras' defaults, so the seed projects' networks behave (and count parameters) as theirs did.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)


# Keras' default initialiser (glorot_uniform), which the seed projects trained with.
KERNEL_INIT = nn.initializers.glorot_uniform()
Dense = functools.partial(nn.Dense, kernel_init=KERNEL_INIT)


CONV_IMPLS = ("auto", "xla", "matmul")
_conv_impl: contextvars.ContextVar[str] = contextvars.ContextVar("conv_impl", default="auto")


@contextlib.contextmanager
def conv_impl(impl: str):
    """Within the block, every `Conv` traced with impl="auto" uses `impl` instead."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; choose one of {', '.join(CONV_IMPLS)}.")
    token = _conv_impl.set(impl)
    try:
        yield
    finally:
        _conv_impl.reset(token)


def resolve_conv_impl(impl: str = "auto", backend: str | None = None) -> str:
    """The implementation "auto" stands for on `backend` (default: JAX's default backend).

    CPU: "matmul". XLA's CPU weight-gradient convolution is several times slower than the same
    gradient as matmuls (measured: 3.6 s vs 0.49 s for one 64->64 3x3 layer at batch 250), and
    vmap turns lax.conv over per-member kernels into a slow grouped convolution.
    GPU/TPU: "xla" (cuDNN / the TPU convolution units).
    """
    if impl == "auto":
        impl = _conv_impl.get()
    if impl != "auto":
        return impl
    return "matmul" if (backend or jax.default_backend()) == "cpu" else "xla"


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_matmul(x, kernel, strides=(1, 1), padding="SAME"):
    """NHWC x HWIO convolution as shifted strided slices concatenated into patches, then one matmul.

    Same result as lax.conv_general_dilated (to float rounding); its gradients are slices, pads
    and matmuls, which XLA CPU runs far faster than its convolution gradients.
    """
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    if padding == "SAME":
        pads = (_same_padding(x.shape[1], kh, sh), _same_padding(x.shape[2], kw, sw))
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        raise ValueError(f"padding must be SAME or VALID, got {padding!r}.")
    if any(pads[0]) or any(pads[1]):
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = (x.shape[1] - kh) // sh + 1
    out_w = (x.shape[2] - kw) // sw + 1
    if kh == kw == 1:
        patches = x[:, : (out_h - 1) * sh + 1: sh, : (out_w - 1) * sw + 1: sw, :]
    else:
        # Patch channels ordered (i, j, c), the row-major order of the HWIO kernel's first three axes.
        patches = jnp.concatenate(
            [x[:, i: i + (out_h - 1) * sh + 1: sh, j: j + (out_w - 1) * sw + 1: sw, :]
             for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout))


def conv_xla(x, kernel, strides=(1, 1), padding="SAME"):
    return lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """2-D convolution over NHWC inputs with flax.linen.Conv's parameter layout.

    impl: "xla" (lax.conv), "matmul" (patches + one matmul) or "auto" (per backend, see
    `resolve_conv_impl`). Parameters are the same for all, so checkpoints move between them.
    """
    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    use_bias: bool = True
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", KERNEL_INIT, (kh, kw, x.shape[-1], self.features))
        fn = conv_matmul if resolve_conv_impl(self.impl) == "matmul" else conv_xla
        y = fn(x, kernel.astype(x.dtype), tuple(self.strides), self.padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


MAX_DROPOUT_RATE = 0.95
_dropout_scale: contextvars.ContextVar = contextvars.ContextVar("dropout_scale", default=1.0)


@contextlib.contextmanager
def dropout_scale(scale):
    """Within the block, every `Dropout` traced uses rate * scale (clipped to [0, 0.95]).

    `scale` may be a traced value: a vmapped sweep gives each member its own dropout strength
    while all members share one compiled program.
    """
    token = _dropout_scale.set(scale)
    try:
        yield
    finally:
        _dropout_scale.reset(token)


class Dropout(nn.Module):
    """Inverted dropout (as flax.linen.Dropout) whose rate may be scaled by a traced value.

    The mask compares 16 random bits per element with an integer threshold (10-17% less time
    than a uniform float per element in two CPU timings); the keep probability is rounded to a multiple of
    1/65536 and the survivors are scaled by the rounded value, so the expectation is exact.
    """
    rate: float
    deterministic: bool = False

    @nn.compact
    def __call__(self, x):
        if self.deterministic or self.rate == 0:
            return x
        rate = jnp.clip(self.rate * jnp.asarray(_dropout_scale.get(), jnp.float32), 0.0, MAX_DROPOUT_RATE)
        threshold = jnp.round((1.0 - rate) * 65536.0).astype(jnp.uint32)
        bits = jax.random.bits(self.make_rng("dropout"), x.shape, jnp.uint16)
        keep = bits.astype(jnp.uint32) < threshold
        return jnp.where(keep, x * (65536.0 / threshold.astype(x.dtype)), jnp.zeros_like(x))


def max_pool(x, size: int = 2):
    """Non-overlapping size x size max-pooling (VALID: a remainder row/column is dropped).

    Written as a reshape and a max rather than nn.max_pool: XLA CPU's select-and-scatter gradient
    made the seed 002 training step 20% slower (449 vs 540 images/s). The gradient differs only
    where a window holds several equal maxima, which it shares among them.
    """
    n, h, w, c = x.shape
    h, w = h - h % size, w - w % size
    x = x[:, :h, :w, :]
    return x.reshape(n, h // size, size, w // size, size, c).max(axis=(2, 4))


def flatten(x):
    return x.reshape(x.shape[0], -1)


def preprocess(x):
    """uint8 [N, 28, 28] or [N, 28, 28, 1] images -> float32 NHWC in [0, 1] (seed 002's /255)."""
    if x.ndim == 3:
        x = x[..., None]
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32) / 255.0
    return x
