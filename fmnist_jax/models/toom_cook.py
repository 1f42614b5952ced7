"""Winograd F(m x m, r x r) convolutions for any small kernel, from Toom-Cook matrices: here for the
4x4 kernels of seed 003's net, as F(2x2, 4x4) (`winograd.py` is the hand-written F(2x2, 3x3)).

A 1-D F(m, r) computes m outputs of an r-tap correlation from n = m + r - 1 inputs with n
multiplications: y = A^T [(G g) * (B^T d)]. `scheme(m, r)` builds A^T, G and B^T from the n - 1
interpolation points (0, 1, -1, 2, -2, ...) and the point at infinity, and checks the identity
exactly on the unit vectors. In 2-D each n x n input tile d gives an m x m output tile
Y = A^T [(G g G^T) * (B^T d B)] A; the n^2 products over channels are one batched matmul. For
F(2x2, 4x4) that is 25 multiplications per output tile and channel pair instead of 64.

The transforms are sums of shifted slices with the schemes' small constant coefficients, which
XLA fuses; gradients come from JAX's autodiff of these linear maps and the matmul (the same
transposed transforms a hand-written VJP would use). Values match lax.conv to float32 rounding
times the transforms' growth (`error_growth`; tests/test_toom_cook.py checks both gradients too).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

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


def error_growth(s: Scheme) -> float:
    """A bound on how much larger than a direct convolution's the 2-D scheme's rounding error can
    be: the product of the transforms' largest absolute row sums, squared for two dimensions."""
    norms = [np.abs(t).sum(axis=1).max() for t in (s.at, s.g, s.bt)]
    return float(np.prod(norms)) ** 2


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


def kernel_transform(kernel, s: Scheme):
    """[r, r, Cin, Cout] HWIO kernel -> [n*n, Cin, Cout] G g G^T."""
    g = jnp.asarray(s.g, kernel.dtype)
    v = jnp.einsum("ai,bj,ijco->abco", g, g, kernel, precision=lax.Precision.HIGHEST)
    return v.reshape(s.n * s.n, *kernel.shape[2:])


def padding_pairs(padding, r: int) -> tuple:
    """SAME (TensorFlow's: the odd pixel at the bottom/right), VALID or explicit pairs, for an r x r kernel."""
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            return (((r - 1) // 2, r // 2),) * 2
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        raise ValueError(f"padding must be SAME, VALID or ((top, bottom), (left, right)), got {padding!r}.")
    (top, bottom), (left, right) = padding
    return ((int(top), int(bottom)), (int(left), int(right)))


def absolute(s: Scheme) -> Scheme:
    """The scheme with every matrix entry replaced by its absolute value: run on |x| and |kernel|,
    it gives the magnitude that bounds the rounding error (Higham's sum-of-products bound)."""
    return Scheme(s.m, s.r, np.abs(s.at), np.abs(s.g), np.abs(s.bt))


def conv_toom_cook(x, kernel, padding="SAME", *, m: int = 2, s: Scheme | None = None):
    """Stride-1 r x r convolution (NHWC x HWIO, cross-correlation as lax.conv) by Winograd
    F(m x m, r x r) (or the scheme `s`); differentiable (JAX's autodiff of the linear transforms
    and the matmul)."""
    r = kernel.shape[0]
    if kernel.shape[1] != r:
        raise ValueError(f"conv_toom_cook needs a square kernel, got {kernel.shape[:2]}.")
    s = s if s is not None else scheme(m, r)
    m = s.m
    n_img, h, w, cin = x.shape
    if kernel.shape[2] != cin:
        raise ValueError(f"kernel has {kernel.shape[2]} input channels, the input {cin}.")
    (top, bottom), (left, right) = padding_pairs(padding, r)
    out_h, out_w = h + top + bottom - r + 1, w + left + right - r + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"padding {padding!r} leaves an input smaller than the {r}x{r} kernel.")
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    # Zeros at the bottom/right complete the last tiles; their outputs are cropped.
    x = jnp.pad(x, ((0, 0), (top, bottom + m * tiles_h - out_h), (left, right + m * tiles_w - out_w), (0, 0)))
    u = input_transform(x, tiles_h, tiles_w, s)
    v = kernel_transform(kernel, s)
    prod = lax.dot_general(u, v, (((2,), (1,)), ((0,), (0,))))
    return output_transform(prod, n_img, tiles_h, tiles_w, s)[:, :out_h, :out_w]
