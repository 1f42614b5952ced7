"""Winograd F(m x m, r x r) convolutions for any small kernel, from Toom-Cook matrices: here for the
4x4 kernels of seed 003's net, as F(2x2, 4x4) (`winograd.py` is the hand-written F(2x2, 3x3)).

A 1-D F(m, r) computes m outputs of an r-tap correlation from n = m + r - 1 inputs with n
multiplications: y = A^T [(G g) * (B^T d)]. `scheme(m, r)` builds A^T, G and B^T from the n - 1
interpolation points (0, 1, -1, 2, -2, ...) and the point at infinity, and checks the identity
exactly on the unit vectors. In 2-D each n x n input tile d gives an m x m output tile
Y = A^T [(G g G^T) * (B^T d B)] A; the n^2 products over channels are one batched matmul. For
F(2x2, 4x4) that is 25 multiplications per output tile and channel pair instead of 64.

The transforms are sums of shifted slices with the schemes' small constant coefficients, which
XLA fuses. The batch is tiled, chunked and differentiated by `winograd.conv_tiled` (a chunk's
transformed tiles sized to the cache, a custom VJP that stays in the Winograd domain); of the
transposed transforms it needs, the output transform's is written out (`output_transform_transpose`:
JAX's own pads every term to a whole tile array), the input transform's is JAX's. Values and both
gradients match an exact correlation within the rounding bound of tests/test_toom_cook.py (the
same algorithm run on magnitudes, `absolute`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from fmnist_jax.models import winograd

# The finite interpolation points, in the order the schemes take them (small magnitudes first
# keep the transforms' entries, hence the rounding error, small).
POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)


class Scheme(NamedTuple):
    """The matrices of F(m, r): A^T [m, n], G [n, r], B^T [n, n], n = m + r - 1 (float64)."""
    m: int
    r: int
    at: np.ndarray
    g: np.ndarray
    bt: np.ndarray

    @property
    def n(self) -> int:
        return self.m + self.r - 1


def scheme(m: int, r: int) -> Scheme:
    """Toom-Cook F(m, r) with the points POINTS[:n-1] and infinity (Lavin and Gray's construction);
    built at trace time (a small least-squares solve), once per layer.

    A^T evaluates the output polynomial at the points (its last column, for infinity, picks the
    leading coefficient); G evaluates the kernel polynomial there, divided by the Lagrange
    denominators; B^T is then the one matrix making y = A^T [(G g) * (B^T d)] the correlation
    y_i = sum_k g_k d_{i+k}: the identity is linear in B^T, solved exactly on the unit vectors.
    """
    n = m + r - 1
    if n - 1 > len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {n - 1} points; at most {len(POINTS)} are defined.")
    p = np.asarray(POINTS[: n - 1])
    at = np.zeros((m, n))
    at[:, : n - 1] = p[None, :] ** np.arange(m)[:, None]
    at[m - 1, n - 1] = 1.0
    denominators = np.array([np.prod([p[j] - p[k] for k in range(n - 1) if k != j]) for j in range(n - 1)])
    g = np.zeros((n, r))
    g[: n - 1] = p[:, None] ** np.arange(r)[None, :] / denominators[:, None]
    g[n - 1, r - 1] = 1.0
    # sum_j at[i, j] g[j, k] bt[j, l] = [l == i + k] for every i, k, l: linear in bt.
    rows, target = [], []
    for i in range(m):
        for k in range(r):
            for l in range(n):
                row = np.zeros((n, n))
                row[:, l] = at[i, :] * g[:, k]
                rows.append(row.ravel())
                target.append(float(l == i + k))
    bt, *_ = np.linalg.lstsq(np.asarray(rows), np.asarray(target), rcond=None)
    bt = bt.reshape(n, n)
    bt[np.abs(bt) < 1e-12] = 0.0
    result = Scheme(m, r, at, g, bt)
    if not np.allclose(_correlate_1d(result, np.eye(n)), _direct_1d(r, m), atol=1e-9):
        raise ArithmeticError(f"F({m}, {r}) from points {tuple(p)} does not reproduce the correlation.")
    return result


def _correlate_1d(s: Scheme, inputs):
    """y [m, r, n]: the scheme applied to every kernel unit vector and every input vector (rows)."""
    return np.einsum("ij,jk,jl->ikl", s.at, s.g, s.bt @ inputs)


def _direct_1d(r: int, m: int):
    n = m + r - 1
    return np.array([[[float(l == i + k) for l in range(n)] for k in range(r)] for i in range(m)])


def _combine(coefficients, slices):
    """sum_j c_j * slices[j], skipping zeros, with +-1 as additions and subtractions."""
    out = None
    for c, x in zip(coefficients, slices):
        if c == 0:
            continue
        term = x if c == 1 else (-x if c == -1 else x * np.float32(c))
        out = term if out is None else out + term
    return out if out is not None else jnp.zeros_like(slices[0])


def _windows(x, axis: int, tiles: int, s: Scheme):
    """The n rows t*m + j (j < n) of every tile t < tiles along `axis`, as n arrays with `tiles`
    rows there: reshapes and contiguous slices (x is m * tiles + r - 1 long along `axis`)."""
    m, n = s.m, s.n
    blocks = tiles + -(-(n - m) // m)                    # m-row blocks covering the last window
    x = jnp.pad(x, [(0, 0)] * axis + [(0, m * blocks - x.shape[axis])] + [(0, 0)] * (x.ndim - axis - 1))
    x = x.reshape(*x.shape[:axis], blocks, m, *x.shape[axis + 1:])
    out = []
    for j in range(n):
        column = lax.index_in_dim(x, j % m, axis + 1, keepdims=False)
        out.append(lax.slice_in_dim(column, j // m, j // m + tiles, axis=axis))
    return out


def input_transform(x, tiles_h: int, tiles_w: int, s: Scheme):
    """[N, m*th + r-1, m*tw + r-1, C] padded input -> [n*n, N*th*tw, C] tiles B^T d B."""
    n_img, c = x.shape[0], x.shape[-1]
    rows = _windows(x, 1, tiles_h, s)
    rows = jnp.stack([_combine(s.bt[i], rows) for i in range(s.n)])            # [n, N, th, W, C]
    cols = _windows(rows, 3, tiles_w, s)
    tiles = jnp.stack([_combine(s.bt[i], cols) for i in range(s.n)], axis=1)   # [n, n, N, th, tw, C]
    return tiles.reshape(s.n * s.n, n_img * tiles_h * tiles_w, c)


def output_transform(prod, n_img: int, tiles_h: int, tiles_w: int, s: Scheme):
    """[n*n, N*th*tw, C] products -> [N, m*th, m*tw, C] output tiles A^T M A."""
    prod = prod.reshape(s.n, s.n, n_img, tiles_h, tiles_w, prod.shape[-1])
    rows = [_combine(s.at[i], [prod[j] for j in range(s.n)]) for i in range(s.m)]      # m x [n, N, th, tw, C]
    y = jnp.stack([jnp.stack([_combine(s.at[k], [r[j] for j in range(s.n)]) for k in range(s.m)], axis=3)
                   for r in rows], axis=2)                                             # [N, th, m, tw, m, C]
    return y.reshape(n_img, s.m * tiles_h, s.m * tiles_w, y.shape[-1])


def output_transform_transpose(dy, tiles_h: int, tiles_w: int, s: Scheme):
    """Transpose of `output_transform`: [N, m*th, m*tw, C] -> [n*n, N*th*tw, C] (A dY A^T per tile):
    n combinations of the m rows of each tile, then of their m columns, as the forward does."""
    n_img, c = dy.shape[0], dy.shape[-1]
    dy = dy.reshape(n_img, tiles_h, s.m, tiles_w, s.m, c)
    rows_in = [dy[:, :, i] for i in range(s.m)]                                       # m x [N, th, tw, m, C]
    rows = jnp.stack([_combine(s.at[:, a], rows_in) for a in range(s.n)])             # [n, N, th, tw, m, C]
    cols_in = [rows[..., k, :] for k in range(s.m)]                                   # m x [n, N, th, tw, C]
    tiles = jnp.stack([_combine(s.at[:, b], cols_in) for b in range(s.n)], axis=1)    # [n, n, N, th, tw, C]
    return tiles.reshape(s.n * s.n, n_img * tiles_h * tiles_w, c)


def absolute(s: Scheme) -> Scheme:
    """The scheme with every matrix entry replaced by its absolute value: run on |x| and |kernel|,
    it gives the magnitude that bounds the rounding error (Higham's sum-of-products bound)."""
    return Scheme(s.m, s.r, np.abs(s.at), np.abs(s.g), np.abs(s.bt))


def _nested(a: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in a)


@dataclasses.dataclass(frozen=True)
class ToomCookTiling(winograd.Tiling):
    """The F(m x m, r x r) tiling of one convolution with a Toom-Cook scheme's transforms; the
    matrices are held as nested tuples so that the tiling stays hashable (a static argument)."""
    at: tuple = ()
    g: tuple = ()
    bt: tuple = ()

    @classmethod
    def create(cls, s: Scheme, height: int, width: int, pads) -> "ToomCookTiling":
        return cls(**winograd.tile_geometry(s.m, s.r, height, width, pads),
                   at=_nested(s.at), g=_nested(s.g), bt=_nested(s.bt))

    @property
    def m(self) -> int:
        return len(self.at)

    @property
    def r(self) -> int:
        return len(self.g[0])

    @property
    def scheme(self) -> Scheme:
        return Scheme(self.m, self.r, np.asarray(self.at), np.asarray(self.g), np.asarray(self.bt))

    def input_transform(self, x):
        return input_transform(self.pad(x), self.tiles_h, self.tiles_w, self.scheme)

    def output_transform(self, prod, n_img: int):
        return output_transform(prod, n_img, self.tiles_h, self.tiles_w, self.scheme)

    def output_transform_transpose(self, dy):
        # Written out: JAX's own transpose of `output_transform` pads every term to a whole tile
        # array and sums them (16 full-size adds for F(2x2, 4x4): a third of seed 003's step).
        return output_transform_transpose(dy, self.tiles_h, self.tiles_w, self.scheme)

    def kernel_transform(self, kernel):
        return winograd.kernel_transform(kernel, self.scheme.g)

    def kernel_transform_transpose(self, dv):
        return winograd.kernel_transform_transpose(dv, self.scheme.g)


def conv_toom_cook(x, kernel, padding="SAME", *, m: int = 2, s: Scheme | None = None, chunk: int | None = None,
                   primal: str = "winograd"):
    """Stride-1 r x r convolution (NHWC x HWIO, cross-correlation as lax.conv) by Winograd
    F(m x m, r x r) (or the scheme `s`), with `winograd.conv_tiled`'s chunking over the batch
    (chunk: images per chunk, default from the cache size) and its chunked custom VJP.
    primal: "xla" computes the value without differentiation (evaluation) with lax.conv."""
    r = kernel.shape[0]
    if kernel.shape[1] != r:
        raise ValueError(f"conv_toom_cook needs a square kernel, got {kernel.shape[:2]}.")
    if primal not in ("winograd", "xla"):
        raise ValueError(f"primal must be 'winograd' or 'xla', got {primal!r}.")
    s = s if s is not None else scheme(m, r)
    n_img, h, w, cin = x.shape
    if kernel.shape[2] != cin:
        raise ValueError(f"kernel has {kernel.shape[2]} input channels, the input {cin}.")
    pads = winograd.padding_pairs(padding, r)
    tiling = ToomCookTiling.create(s, h, w, pads)
    return winograd.conv_tiled(x, kernel, tiling, chunk, xla_pads=pads if primal == "xla" else None)
