"""Winograd F(2x2, 3x3) convolution in plain jax.numpy, for stride-1 3x3 convolutions on CPU.

Each 4x4 input tile d and 3x3 kernel g give a 2x2 output tile Y = A^T [(G g G^T) * (B^T d B)] A:
16 multiplications per tile and channel pair instead of 36. The transforms are slices and
additions that XLA fuses into one pass; the 16 products over channels are one batched matmul.

On a CPU whose memory bandwidth is low, the transformed tiles of a whole batch (four times the
input, four times the output) cost more to move than to compute, so the batch is processed in
chunks (`lax.map`) small enough that a chunk's transformed tiles stay in the last-level cache
(`chunk_size`). The gradient is a custom VJP that stays in the Winograd domain chunk by chunk:
the output gradient is transformed once per chunk, the kernel gradient is summed over chunks in
the transformed domain and brought back with G^T (.) G once, and the input gradient is the
transpose of the input transform applied to that chunk's transformed-input gradient. Nothing
is recomputed beyond the (cheap) input transform of each chunk; the backward is built from
differentiable operations, so gradients of gradients work.

Benchmarks: benchmarks/conv_layer.py (one layer), benchmarks/train_throughput.py (whole step).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# G of F(2, 3): the kernel transform (V = G g G^T).
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)

# When the cache size cannot be read (not Linux), assume this many bytes of last-level cache.
_DEFAULT_CACHE_BYTES = 32 * 2**20
# A chunk's transformed tiles (input tiles and products) are sized to this fraction of the
# last-level cache: the rest holds the chunk's input and output, the kernel, XLA's other buffers
# and the other core's work (the L3 is shared). benchmarks/conv_layer.py --chunks=... sweeps it.
_CACHE_FRACTION = 0.5


def last_level_cache_bytes() -> int:
    """Size of CPU 0's largest data or unified cache, read from sysfs (a fixed default elsewhere).
    Read at trace time, once per convolution layer: a few small files, not worth a cache."""
    best = 0
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in os.listdir(root):
            with open(os.path.join(root, index, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(root, index, "size")) as f:
                text = f.read().strip()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return best or _DEFAULT_CACHE_BYTES


def chunk_size(out_h: int, out_w: int, cin: int, cout: int, itemsize: int = 4, *, m: int = 2, r: int = 3) -> int:
    """Images per chunk: as many as keep one chunk's transformed tiles in `_CACHE_FRACTION` of the
    last-level cache. For F(m x m, r x r) (n = m + r - 1) these are n^2 * tiles * (cin + cout)
    numbers per image (input tiles and products), tiles = ceil(out_h/m) * ceil(out_w/m).
    """
    n = m + r - 1
    tiles = -(-out_h // m) * -(-out_w // m)
    per_image = itemsize * n * n * tiles * (cin + cout)
    return max(1, int(_CACHE_FRACTION * last_level_cache_bytes()) // per_image)


def padding_pairs(padding, r: int = 3) -> tuple:
    """SAME (TensorFlow's: an odd pixel at the bottom/right), VALID or explicit ((top, bottom),
    (left, right)) pairs, for an r x r stride-1 kernel."""
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            return (((r - 1) // 2, r // 2),) * 2
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        raise ValueError(f"padding must be SAME, VALID or ((top, bottom), (left, right)), got {padding!r}.")
    (top, bottom), (left, right) = padding
    return ((int(top), int(bottom)), (int(left), int(right)))


def kernel_transform(kernel, g=_G):
    """[r, r, cin, cout] HWIO kernel -> [n*n, cin, cout] Winograd-domain kernel G g G^T, for the
    [n, r] kernel transform G (default: F(2, 3)'s)."""
    g = jnp.asarray(g, kernel.dtype)
    v = jnp.einsum("ai,bj,ijco->abco", g, g, kernel, precision=lax.Precision.HIGHEST)
    return v.reshape(g.shape[0] ** 2, *kernel.shape[2:])


def kernel_transform_transpose(dv, g=_G):
    """Transpose of `kernel_transform`: [n*n, cin, cout] -> [r, r, cin, cout] (G^T dv G)."""
    g = jnp.asarray(g, dv.dtype)
    return jnp.einsum("ai,bj,abco->ijco", g, g, dv.reshape(g.shape[0], g.shape[0], *dv.shape[1:]),
                      precision=lax.Precision.HIGHEST)


def _bt(rows):
    """B^T of F(2, 3) applied to four equally shaped slices d0..d3 along one axis."""
    d0, d1, d2, d3 = rows
    return (d0 - d2, d1 + d2, d2 - d1, d1 - d3)


def _pairs(x, axis: int, tiles: int):
    """The four rows 2t, 2t+1, 2t+2, 2t+3 (t < tiles) along `axis` of x (2*tiles+2 long there),
    as reshapes and contiguous slices: cheaper for XLA CPU to run and compile than strided slices."""
    x = lax.slice_in_dim(x, 0, 2 * tiles + 2, axis=axis)
    x = x.reshape(*x.shape[:axis], tiles + 1, 2, *x.shape[axis + 1:])
    even, odd = (lax.index_in_dim(x, i, axis + 1, keepdims=False) for i in (0, 1))
    first, rest = (lambda y: lax.slice_in_dim(y, 0, tiles, axis=axis)), (lambda y: lax.slice_in_dim(y, 1, tiles + 1, axis=axis))
    return first(even), first(odd), rest(even), rest(odd)


def _input_transform(x, tiles_h: int, tiles_w: int):
    """[n, 2*th+2, 2*tw+2, c] padded input -> [16, n*th*tw, c] transformed tiles (B^T d B)."""
    n, c = x.shape[0], x.shape[-1]
    rows = jnp.stack(_bt(_pairs(x, 1, tiles_h)))                         # [4, n, th, w, c]
    tiles = jnp.stack(_bt(_pairs(rows, 3, tiles_w)), axis=1)             # [4, 4, n, th, tw, c]
    return tiles.reshape(16, n * tiles_h * tiles_w, c)


def _output_transform(m, n: int, tiles_h: int, tiles_w: int):
    """[16, n*th*tw, c] products -> [n, 2*th, 2*tw, c] output tiles (A^T m A)."""
    m = m.reshape(4, 4, n, tiles_h, tiles_w, m.shape[-1])
    s = (m[0] + m[1] + m[2], m[1] - m[2] - m[3])            # A^T along the tile rows
    y = [(r[0] + r[1] + r[2], r[1] - r[2] - r[3]) for r in s]  # ... and along the columns
    y = jnp.stack([jnp.stack(r, axis=3) for r in y], axis=2)  # [n, th, 2, tw, 2, c]
    return y.reshape(n, 2 * tiles_h, 2 * tiles_w, m.shape[-1])


def _output_transform_transpose(dy, tiles_h: int, tiles_w: int):
    """Transpose of `_output_transform`: [n, 2*th, 2*tw, c] -> [16, n*th*tw, c]."""
    n, c = dy.shape[0], dy.shape[-1]
    dy = dy.reshape(n, tiles_h, 2, tiles_w, 2, c)

    def a(d0, d1):   # A (the transpose of A^T) along one axis
        return (d0, d0 + d1, d0 - d1, -d1)

    rows = jnp.stack(a(dy[:, :, 0], dy[:, :, 1]))                       # [4, n, th, tw, 2, c]
    tiles = jnp.stack(a(rows[..., 0, :], rows[..., 1, :]), axis=1)       # [4, 4, n, th, tw, c]
    return tiles.reshape(16, n * tiles_h * tiles_w, c)


def _products(u, v):
    """The 16 per-tile-position matmuls over channels: [16, p, cin] x [16, cin, cout]."""
    return lax.dot_general(u, v, (((2,), (1,)), ((0,), (0,))))


def tile_geometry(m: int, r: int, height: int, width: int, pads) -> dict:
    """Output size, tile counts, and the padding that makes the input a whole number of m x m
    output tiles, for an r x r kernel: the fields of a `Tiling`."""
    out_h, out_w = height + sum(pads[0]) - r + 1, width + sum(pads[1]) - r + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"padding {pads} leaves a {height}x{width} input smaller than the {r}x{r} kernel.")
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    # Extra rows/columns (zeros) at the bottom/right complete the last tiles; cropped after.
    pads = ((pads[0][0], pads[0][1] + m * tiles_h - out_h), (pads[1][0], pads[1][1] + m * tiles_w - out_w))
    return dict(out_h=out_h, out_w=out_w, tiles_h=tiles_h, tiles_w=tiles_w, pads=pads)


@dataclasses.dataclass(frozen=True)
class Tiling:
    """One convolution's Winograd F(m x m, r x r) tiling and its four linear transforms.

    The chunked forward and custom VJP (`conv_tiled`) need only these; this class is F(2x2, 3x3)
    with hand-written transforms, `toom_cook.ToomCookTiling` any F(m x m, r x r) from its
    matrices. Frozen and hashable: it is a static argument of the custom VJP.
    """
    out_h: int
    out_w: int
    tiles_h: int
    tiles_w: int
    pads: tuple

    m = 2
    r = 3

    @property
    def n(self) -> int:
        return self.m + self.r - 1

    def pad(self, x):
        return jnp.pad(x, ((0, 0), *self.pads, (0, 0)))

    def input_transform(self, x):
        """[N, H, W, C] unpadded input -> [n*n, N*th*tw, C] transformed tiles (B^T d B)."""
        return _input_transform(self.pad(x), self.tiles_h, self.tiles_w)

    def output_transform(self, prod, n_img: int):
        """[n*n, N*th*tw, C] products -> [N, m*th, m*tw, C] output tiles (A^T M A)."""
        return _output_transform(prod, n_img, self.tiles_h, self.tiles_w)

    def output_transform_transpose(self, dy):
        """[N, m*th, m*tw, C] -> [n*n, N*th*tw, C]: the transpose of `output_transform`."""
        return _output_transform_transpose(dy, self.tiles_h, self.tiles_w)

    def kernel_transform(self, kernel):
        """[r, r, Cin, Cout] HWIO kernel -> [n*n, Cin, Cout] (G g G^T)."""
        return kernel_transform(kernel)

    def kernel_transform_transpose(self, dv):
        """[n*n, Cin, Cout] -> [r, r, Cin, Cout]: the transpose of `kernel_transform`."""
        return kernel_transform_transpose(dv)


def _chunked(fn, xs, chunk: int):
    """fn applied to the leading axis of every array in `xs` in chunks; outputs concatenated.

    Whole chunks go through `lax.map` (a loop, so one chunk's intermediates are live at a time);
    a remainder smaller than a chunk is one more call.
    """
    n = xs[0].shape[0]
    whole = n // chunk
    outs = []
    if whole:
        body = [x[: whole * chunk].reshape(whole, chunk, *x.shape[1:]) for x in xs]
        if whole == 1:
            stacked = jax.tree.map(lambda y: y[None], fn(*[b[0] for b in body]))
        else:
            stacked = lax.map(lambda b: fn(*b), body)
        outs.append(jax.tree.map(lambda y: y.reshape(whole * chunk, *y.shape[2:]), stacked))
    if n % chunk:
        outs.append(fn(*[x[whole * chunk:] for x in xs]))
    if len(outs) == 1:
        return outs[0]
    return jax.tree.map(lambda *ys: jnp.concatenate(ys), *outs)


def default_chunk(batch: int, out_h: int, out_w: int, cin: int, cout: int, itemsize: int = 4, *,
                  m: int = 2, r: int = 3) -> int:
    """The chunk `conv_winograd` uses: at most `chunk_size` images, preferably the largest divisor
    of the batch from half of that up (a remainder is a second copy of the program to compile
    and a small, less efficient matmul), else the smallest chunk giving as few chunks."""
    most = max(1, min(chunk_size(out_h, out_w, cin, cout, itemsize, m=m, r=r), batch))
    for size in range(most, (most + 1) // 2 - 1, -1):
        if batch % size == 0:
            return size
    return -(-batch // -(-batch // most))


def _forward(x, v, geom: Tiling, chunk: int):
    def one(xc):
        y = geom.output_transform(_products(geom.input_transform(xc), v), xc.shape[0])
        return y[:, : geom.out_h, : geom.out_w]

    return _chunked(one, (x,), chunk)


def _backward(x, v, dy, geom: Tiling, chunk: int):
    """(dx, dv): the input gradient and the Winograd-domain kernel gradient, chunk by chunk."""
    dy_pads = ((0, 0), (0, geom.m * geom.tiles_h - geom.out_h), (0, geom.m * geom.tiles_w - geom.out_w), (0, 0))

    def one(xc, dyc):
        u = geom.input_transform(xc)
        dm = geom.output_transform_transpose(jnp.pad(dyc, dy_pads))
        dv = lax.dot_general(u, dm, (((1,), (1,)), ((0,), (0,))))          # [n*n, cin, cout]
        du = lax.dot_general(dm, v, (((2,), (2,)), ((0,), (0,))))          # [n*n, p, cin]
        # The input transform is linear: its transpose (pads and additions) maps du to dx.
        (dx,) = jax.linear_transpose(geom.input_transform, jax.ShapeDtypeStruct(xc.shape, xc.dtype))(du)
        return dx, dv

    n = x.shape[0]
    whole = n // chunk
    dx, dv = [], jnp.zeros_like(v)
    if whole > 1:
        # The kernel gradient is summed in the scan's carry, not stacked per chunk.
        def step(dv_sum, b):
            dx_c, dv_c = one(*b)
            return dv_sum + dv_c, dx_c

        xs = x[: whole * chunk].reshape(whole, chunk, *x.shape[1:])
        dys = dy[: whole * chunk].reshape(whole, chunk, *dy.shape[1:])
        dv, dx_whole = lax.scan(step, dv, (xs, dys))
        dx.append(dx_whole.reshape(whole * chunk, *x.shape[1:]))
    elif whole == 1:
        dx_c, dv = one(x[:chunk], dy[:chunk])
        dx.append(dx_c)
    if n % chunk:
        dx_c, dv_c = one(x[whole * chunk:], dy[whole * chunk:])
        dx.append(dx_c)
        dv = dv + dv_c
    return (dx[0] if len(dx) == 1 else jnp.concatenate(dx)), dv


def conv_winograd(x, kernel, padding="SAME", *, chunk: int | None = None, primal: str = "winograd"):
    """Stride-1 3x3 convolution of NHWC `x` with HWIO `kernel` by Winograd F(2x2, 3x3).

    Equals lax.conv_general_dilated(x, kernel, (1, 1), padding, ("NHWC", "HWIO", "NHWC")) to
    float32 rounding (tests/test_winograd.py states the error bound), for any batch, spatial
    size and channel counts. padding: "SAME", "VALID" or explicit ((top, bottom), (left, right)).
    chunk: images per chunk of the batch, the last chunk taking the remainder (default:
    `default_chunk`, from the cache size).
    primal: how the value is computed when it is not differentiated (evaluation): "winograd",
    or "xla" for lax.conv; under differentiation the forward is always Winograd.
    Differentiable to any order, under jit and vmap.
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"conv_winograd needs a 3x3 kernel, got {kernel.shape[:2]}.")
    if primal not in ("winograd", "xla"):
        raise ValueError(f"primal must be 'winograd' or 'xla', got {primal!r}.")
    n, h, w, cin = x.shape
    if kernel.shape[2] != cin:
        raise ValueError(f"kernel has {kernel.shape[2]} input channels, the input {cin}.")
    pads = padding_pairs(padding, 3)
    geom = Tiling(**tile_geometry(2, 3, h, w, pads))
    return conv_tiled(x, kernel, geom, chunk, xla_pads=pads if primal == "xla" else None)


def conv_tiled(x, kernel, geom: Tiling, chunk: int | None = None, xla_pads=None):
    """The convolution `geom` tiles (built by `tile_geometry` for x's spatial size), chunked over
    the batch (default `default_chunk`), with the chunked custom VJP of this module's docstring.
    xla_pads: when given, the value without differentiation is lax.conv with this padding."""
    if chunk is None:
        chunk = default_chunk(x.shape[0], geom.out_h, geom.out_w, x.shape[-1], kernel.shape[3],
                              x.dtype.itemsize, m=geom.m, r=geom.r)
    return _conv(x, kernel, geom, min(chunk, x.shape[0]), xla_pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, geom, chunk, xla_pads):
    if xla_pads is not None:
        return lax.conv_general_dilated(x, kernel, (1, 1), xla_pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return _forward(x, geom.kernel_transform(kernel), geom, chunk)


def _conv_fwd(x, kernel, geom, chunk, xla_pads):
    v = geom.kernel_transform(kernel)
    return _forward(x, v, geom, chunk), (x, v)


def _conv_bwd(geom, chunk, xla_pads, residuals, dy):
    x, v = residuals
    dx, dv = _backward(x, v, dy, geom, chunk)
    return dx, geom.kernel_transform_transpose(dv)


_conv.defvjp(_conv_fwd, _conv_bwd)
