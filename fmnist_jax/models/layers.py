"""Building blocks shared by the zoo.

`Conv` is the zoo's one convolution layer. Its parameters are laid out exactly as
`flax.linen.Conv` (kernel [kh, kw, in, out], bias [out]), so a checkpoint trained with one
implementation loads into another.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fmnist_jax.models import toom_cook, winograd

# Keras' defaults, so the seed projects' networks behave (and count parameters) as theirs did.
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)


# Keras' default initialiser (glorot_uniform), which the seed projects trained with.
KERNEL_INIT = nn.initializers.glorot_uniform()
Dense = functools.partial(nn.Dense, kernel_init=KERNEL_INIT)


CONV_IMPLS = ("auto", "xla", "matmul", "hybrid", "winograd")


def resolve_conv_impl(impl: str = "auto", backend: str | None = None) -> str:
    """The implementation `impl` stands for on `backend` (default: JAX's default backend).

    "auto" is "winograd" on CPU (Winograd training for 3x3 convolutions, `hybrid` for the others;
    XLA CPU's kernel-gradient convolution is its slow path), and "xla" on GPU/TPU (cuDNN / the TPU
    convolution units, which choose Winograd themselves where it pays). Measured with
    `benchmarks.train_throughput` and `benchmarks.conv_layer`; figures in benchmarks/README.md.
    Under vmap over per-member kernels lax.conv becomes a grouped convolution (slow on CPU), so
    vmapped members on CPU are better served by "matmul".
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; choose one of {', '.join(CONV_IMPLS)}.")
    if impl != "auto":
        return impl
    return "winograd" if (backend or jax.default_backend()) == "cpu" else "xla"


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padding_pairs(x_shape, kernel_shape, strides, padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit (low, high) padding of the two spatial axes, as lax.conv pads for SAME / VALID."""
    if padding == "SAME":
        return tuple(_same_padding(x_shape[1 + a], kernel_shape[a], strides[a]) for a in range(2))
    if padding == "VALID":
        return ((0, 0), (0, 0))
    raise ValueError(f"padding must be SAME or VALID, got {padding!r}.")


def _patches(x, kernel_shape, strides, pads):
    """[N, out_h, out_w, kh*kw*cin] patches; channels ordered (i, j, c) like the HWIO kernel's rows."""
    kh, kw = kernel_shape[:2]
    sh, sw = strides
    if any(pads[0]) or any(pads[1]):
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = (x.shape[1] - kh) // sh + 1
    out_w = (x.shape[2] - kw) // sw + 1
    windows = [x[:, i: i + (out_h - 1) * sh + 1: sh, j: j + (out_w - 1) * sw + 1: sw, :]
               for i in range(kh) for j in range(kw)]
    return windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)


def conv_matmul(x, kernel, strides=(1, 1), padding="SAME"):
    """NHWC x HWIO convolution as shifted strided slices concatenated into patches, then one matmul.

    Same result as lax.conv_general_dilated (to float rounding); its gradients are slices, pads
    and matmuls, which XLA CPU runs far faster than its convolution gradients.
    """
    kh, kw, cin, cout = kernel.shape
    patches = _patches(x, kernel.shape, tuple(strides), _padding_pairs(x.shape, kernel.shape, strides, padding))
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout))


def conv_xla(x, kernel, strides=(1, 1), padding="SAME"):
    """lax.conv_general_dilated over NHWC x HWIO; padding is SAME, VALID or explicit (low, high) pairs."""
    return lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


_FEW_INPUT_CHANNELS = 8


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_hybrid_stride1(x, kernel, pads):
    # Without differentiation (evaluation): XLA's convolution, the fastest forward on CPU.
    return conv_xla(x, kernel, (1, 1), pads)


def _conv_hybrid_forward(x, kernel, pads):
    # Under differentiation the forward builds the patches anyway: the kernel gradient needs them.
    patches = _patches(x, kernel.shape, (1, 1), pads)
    y = jnp.dot(patches, kernel.reshape(-1, kernel.shape[-1]))
    return y, (patches, kernel)


def _conv_hybrid_backward(pads, residuals, dy):
    patches, kernel = residuals
    kh, kw = kernel.shape[:2]
    # Kernel gradient: one matmul over batch and positions (XLA CPU's own is much slower). It is
    # written as (dy^T patches)^T on 2-D views so that XLA transposes dy, not the kh*kw times
    # larger patches.
    rows = patches.shape[0] * patches.shape[1] * patches.shape[2]
    d_kernel = jnp.dot(dy.reshape(rows, -1).T, patches.reshape(rows, -1)).T.reshape(kernel.shape)
    if kernel.shape[2] < _FEW_INPUT_CHANNELS:
        # Few input channels (a network's first layer): XLA's convolution to so few output
        # channels is slow; the patches' gradient is small, and the patches are linear in x.
        n, out_h, out_w, _ = patches.shape
        x_shape = (n, out_h + kh - 1 - sum(pads[0]), out_w + kw - 1 - sum(pads[1]), kernel.shape[2])
        d_patches = jnp.dot(dy, kernel.reshape(-1, kernel.shape[-1]).T)
        to_patches = jax.linear_transpose(lambda x: _patches(x, kernel.shape, (1, 1), pads),
                                          jax.ShapeDtypeStruct(x_shape, dy.dtype))
        return to_patches(d_patches)[0], d_kernel
    # Input gradient: a stride-1 convolution is transposed by another forward convolution, with the
    # kernel flipped in space, its in/out channels swapped and the padding mirrored.
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    mirrored = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]), (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
    d_x = conv_xla(dy, flipped, (1, 1), mirrored)
    return d_x, d_kernel


_conv_hybrid_stride1.defvjp(_conv_hybrid_forward, _conv_hybrid_backward)


def conv_hybrid(x, kernel, strides=(1, 1), padding="SAME"):
    """XLA convolutions where XLA CPU is fast, one matmul where it is slow.

    Stride-1 kernels larger than 1x1 (every convolution of the seed nets) get a custom VJP: the
    forward is lax.conv when not differentiated and patches + matmul when it is (the patches are
    kept for the kernel gradient, a single matmul); the input gradient is lax.conv of the output
    gradient with the flipped kernel, a forward convolution that XLA CPU runs fast. 1x1 and
    strided convolutions use `conv_matmul` (a 1x1 is a plain matmul already).
    Numerically equal to lax.conv to float32 rounding, values and both gradients.
    """
    strides = tuple(strides)
    if strides != (1, 1) or kernel.shape[:2] == (1, 1):
        return conv_matmul(x, kernel, strides, padding)
    return _conv_hybrid_stride1(x, kernel, _padding_pairs(x.shape, kernel.shape, strides, padding))


# Outputs of at most this many positions evaluate through Winograd's forward, larger ones through
# lax.conv: XLA CPU's convolution collapses on small maps with many channels (512->512 at 2x2, batch
# 1000: 10.2 s against Winograd's 77 ms; 128->128 at 7x7: 229 against 71 ms), while at 28x28 the
# whole seed 002 net evaluated faster with lax.conv (`benchmarks.conv_layer`, benchmarks/README.md).
_WINOGRAD_EVAL_MAX_POSITIONS = 64


def conv_winograd_or_hybrid(x, kernel, strides=(1, 1), padding="SAME"):
    """Winograd for stride-1 convolutions with at least `_FEW_INPUT_CHANNELS` input channels:
    F(2x2, 3x3) (`winograd.conv_winograd`) for 3x3 kernels, F(2x2, 4x4) (`toom_cook`) for 4x4
    ones; `conv_hybrid` for every other convolution.

    With few input channels (a network's first layer) the Winograd products are matmuls over a
    channel or two and the transforms' memory traffic dominates; `benchmarks.conv_layer --cin=1`
    measures the choice. Without differentiation (evaluation) the value is lax.conv, as in
    `conv_hybrid`, except on maps of at most `_WINOGRAD_EVAL_MAX_POSITIONS` output positions,
    where XLA CPU's convolution is slow: there it is Winograd's forward too.
    """
    if tuple(strides) == (1, 1) and kernel.shape[2] >= _FEW_INPUT_CHANNELS and kernel.shape[:2] in ((3, 3), (4, 4)):
        (top, bottom), (left, right) = _padding_pairs(x.shape, kernel.shape, (1, 1), padding)
        r = kernel.shape[0]
        positions = (x.shape[1] + top + bottom - r + 1) * (x.shape[2] + left + right - r + 1)
        primal = "winograd" if positions <= _WINOGRAD_EVAL_MAX_POSITIONS else "xla"
        if r == 3:
            return winograd.conv_winograd(x, kernel, padding, primal=primal)
        return toom_cook.conv_toom_cook(x, kernel, padding, m=2, primal=primal)
    return conv_hybrid(x, kernel, strides, padding)


CONV_FUNCTIONS = {"xla": conv_xla, "matmul": conv_matmul, "hybrid": conv_hybrid,
                  "winograd": conv_winograd_or_hybrid}


class Conv(nn.Module):
    """2-D convolution over NHWC inputs with flax.linen.Conv's parameter layout.

    impl: "xla" (lax.conv), "matmul" (patches + one matmul), "hybrid" (`conv_hybrid`), "winograd"
    (`conv_winograd_or_hybrid`) or "auto" (per backend, see `resolve_conv_impl`). Every zoo model
    has a `conv_impl` field that it passes here. Parameters are the same for all, so checkpoints move between them.
    """
    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    use_bias: bool = True
    impl: str = "auto"
    kernel_init: Callable = KERNEL_INIT

    @nn.compact
    def __call__(self, x, *, pool: int = 1):
        """The convolution of x (plus bias); with pool > 1, the pair (max_pool(conv + bias, pool),
        conv + bias).

        The pooled value is `max_pool_plus_bias`'s: under differentiation the bias is added
        after the pool. The full map, second in the pair, is for `record`: under jit XLA drops it
        when it is unused.
        """
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        fn = CONV_FUNCTIONS[resolve_conv_impl(self.impl)]
        y = fn(x, kernel.astype(x.dtype), tuple(self.strides), self.padding)
        if not self.use_bias:
            return (max_pool(y, pool), y) if pool > 1 else y
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if pool > 1:
            return max_pool_plus_bias(y, bias, pool), y + bias
        return y + bias


MAX_DROPOUT_RATE = 0.95


class Dropout(nn.Module):
    """Inverted dropout (as flax.linen.Dropout) whose rate may be scaled by a traced value.

    Called as ``Dropout(rate, deterministic=not train)(x, scale)``: the rate used is
    rate * scale, clipped to [0, 0.95]. `scale` may be traced, so the members of a vmapped sweep
    each have their own dropout strength in one compiled program.

    The mask compares 16 random bits per element with an integer threshold, which is cheaper
    than a uniform float per element (`benchmarks.profile_step`); the keep probability is rounded
    to a multiple of 1/65536 and the survivors are scaled by the rounded value, so the
    expectation is exact.
    """
    rate: float
    deterministic: bool = False

    @nn.compact
    def __call__(self, x, scale=1.0):
        if self.deterministic or self.rate == 0:
            return x
        rate = jnp.clip(self.rate * jnp.asarray(scale, jnp.float32), 0.0, MAX_DROPOUT_RATE)
        threshold = jnp.round((1.0 - rate) * 65536.0).astype(jnp.uint32)
        bits = jax.random.bits(self.make_rng("dropout"), x.shape, jnp.uint16)
        keep = bits.astype(jnp.uint32) < threshold
        return jnp.where(keep, x * (65536.0 / threshold.astype(x.dtype)), jnp.zeros_like(x))


def _windows(x, size: int):
    """The size*size elements of every window of x (H, W multiples of size), row-major: a list
    of [N, H/size, W/size, C] views."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // size, size, w // size, size, c)
    return [x[:, :, i, :, j, :] for i in range(size) for j in range(size)]


def _first_maximum(x, size: int):
    """Index (uint8, row-major) of each window's first maximum; x's H, W multiples of size."""
    elements = _windows(x, size)
    best, winner = elements[0], jnp.zeros(elements[0].shape, jnp.uint8)
    for k, e in enumerate(elements[1:], start=1):
        greater = e > best           # strict: the first of equal maxima keeps the window
        best = jnp.where(greater, e, best)
        winner = jnp.where(greater, jnp.uint8(k), winner)
    return winner


def max_pool(x, size: int = 2):
    """Non-overlapping size x size max-pooling (VALID: a remainder row/column is dropped).

    The same values as nn.max_pool, and the same gradient: each window's gradient goes to its
    first maximum (row-major), as in nn.max_pool and TensorFlow's MaxPoolGrad. The pooling is a
    custom VJP because both autodiff routes are slow or fragile on XLA CPU: nn.max_pool's
    select-and-scatter gradient lowers to iotas and scatters (about a third of seed 004's CNN
    step; seed 002's step ran 20% faster without it), and the gradient of a reshape-and-max
    compares the input with the max again (ties share it), which XLA CPU's fusion emitters once
    turned into 0/0 = NaN in seed 004's CNN, the compared values recomputed with other rounding.
    Here the forward records each window's winner (a byte a window) from the very values it
    pooled, and the backward only places the output gradient there.
    """
    n, h, w, c = x.shape
    return _max_pool_whole(x[:, : h - h % size, : w - w % size, :], size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_whole(x, size):
    n, h, w, c = x.shape
    return x.reshape(n, h // size, size, w // size, size, c).max(axis=(2, 4))


def _max_pool_fwd(x, size):
    # The value is the primal's (a NaN anywhere in a window propagates); the winner only routes
    # the gradient, so it never produces a NaN of its own.
    return _max_pool_whole(x, size), _first_maximum(x, size)


def _max_pool_bwd(size, winner, d_pooled):
    n, th, tw, c = d_pooled.shape
    parts = [jnp.where(winner == k, d_pooled, jnp.zeros_like(d_pooled)) for k in range(size * size)]
    d_x = jnp.stack(parts, axis=3).reshape(n, th, tw, size, size, c)
    return (d_x.transpose(0, 1, 3, 2, 4, 5).reshape(n, th * size, tw * size, c),)


_max_pool_whole.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def max_pool_plus_bias(y, bias, size: int = 2):
    """max_pool(y + bias, size) for a per-channel bias; under differentiation max_pool(y) + bias.

    The two are the same values exactly (a per-channel constant commutes with the max, and
    rounding is monotone). Pooling first halves the training work around the pool: the bias add
    runs on a quarter of the values and its gradient sums a quarter (in seed 003's step the
    full-map add and its gradient were ~60 of 446 ms, `benchmarks.profile_step`). Without
    differentiation the bias is added first on purpose: XLA CPU runs lax.conv followed by an add
    as one fused call 2-3x faster than the bare convolution (benchmarks/README.md), which the
    pool-first order would leave bare. The gradient is max_pool's (to each window's first maximum).
    """
    return max_pool(y + bias, size)


def _max_pool_plus_bias_fwd(y, bias, size):
    pooled, pool_vjp = jax.vjp(lambda y: max_pool(y, size), y)
    return pooled + bias, pool_vjp


def _max_pool_plus_bias_bwd(size, pool_vjp, d_out):
    (d_y,) = pool_vjp(d_out)
    return d_y, d_out.sum(axis=tuple(range(d_out.ndim - 1)))


max_pool_plus_bias.defvjp(_max_pool_plus_bias_fwd, _max_pool_plus_bias_bwd)


INTERMEDIATES = "intermediates"


def record(module: nn.Module, name: str, x):
    """Sows `x` into the "intermediates" collection under `name` and returns it unchanged.

    A no-op unless the model is applied with ``mutable=["intermediates"]`` (see
    `fmnist_jax.analysis`), so training and prediction are unaffected. The zoo names convolution
    outputs (after their activation where one follows) "conv<i>" and pooling outputs "pool<i>",
    and records the penultimate activations (the input of the classifier) as "features". Sowing
    adds no parameters, so parameter trees and checkpoints are unchanged.
    """
    module.sow(INTERMEDIATES, name, x)
    return x


def flatten(x):
    return x.reshape(x.shape[0], -1)


def preprocess(x):
    """uint8 [N, 28, 28] or [N, 28, 28, 1] images -> float32 NHWC in [0, 1] (seed 002's /255)."""
    if x.ndim == 3:
        x = x[..., None]
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32) / 255.0
    return x
