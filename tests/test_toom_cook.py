"""Toom-Cook Winograd F(m x m, r x r): the schemes reproduce the correlation exactly, and the
convolution's value and both gradients equal an exact float64 correlation within the derived
rounding bound, on odd shapes and paddings.

The bound (as tests/test_winograd.py): every output is a sum of products formed through at most
k roundings along any path, so |computed - exact| <= gamma_k * magnitude, where `magnitude` is
the same algorithm run on |inputs| with |transform matrices| (`toom_cook.absolute`), for the
gradients the same transposed maps applied to |cotangent|. Roundings along a path, generously
(coefficients such as 1/6 are not exact): the input transform 2n (n terms along rows, then
columns, each scaled), the kernel transform 2r + 2, the product 1, the sum over channels, batch
or tiles (`terms`), the output transform 2n.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fmnist_jax.models import toom_cook

U = 2.0**-24


def gamma(k):
    return k * U / (1 - k * U)


@pytest.mark.parametrize("m, r", [(2, 3), (2, 4), (3, 4), (2, 5), (4, 3)])
def test_every_scheme_reproduces_the_correlation_exactly(m, r):
    s = toom_cook.scheme(m, r)
    d, g = np.random.default_rng(m * 10 + r).normal(size=(2, s.n))[0], np.random.default_rng(r).normal(size=r)
    direct = np.array([sum(g[k] * d[i + k] for k in range(r)) for i in range(m)])
    np.testing.assert_allclose(s.at @ ((s.g @ g) * (s.bt @ d)), direct, rtol=1e-12, atol=1e-12)


def _exact(x, k, pads):
    """Value and both gradients (for a cotangent dy) of the correlation, in float64 numpy."""
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    r = k.shape[0]
    windows = sliding_window_view(xp, (r, r), axis=(1, 2))          # [N, oh, ow, C, r, r]
    y = np.einsum("nhwcij,ijco->nhwo", windows, k)

    def grads(dy):
        dy = np.asarray(dy, np.float64)
        dk = np.einsum("nhwcij,nhwo->ijco", windows, dy)
        dxp = np.zeros_like(xp)
        for i in range(r):
            for j in range(r):
                dxp[:, i:i + y.shape[1], j:j + y.shape[2]] += np.einsum("nhwo,co->nhwc", dy, k[i, j])
        (top, _), (left, _) = pads
        return dxp[:, top:top + x.shape[1], left:left + x.shape[2]], dk

    return y, grads


@pytest.mark.parametrize("shape, r, padding", [
    ((3, 14, 14, 8), 4, "VALID"),                  # seed 003's second convolution, smaller
    ((2, 13, 11, 5), 4, "SAME"),                   # odd sizes: partial tiles, TF's odd SAME pixel
    ((2, 9, 10, 3), 4, ((1, 2), (0, 3))),
    ((2, 12, 7, 4), 5, "SAME"),
])
def test_value_and_gradients_are_the_correlation_within_the_rounding_bound(shape, r, padding):
    rng = np.random.default_rng(sum(shape) + r)
    x = rng.normal(size=shape).astype(np.float32)
    k = (rng.normal(size=(r, r, shape[-1], 6)) / r).astype(np.float32)
    pads = toom_cook.padding_pairs(padding, r)
    y_exact, exact_grads = _exact(x, k, pads)
    dy = rng.normal(size=y_exact.shape).astype(np.float32)
    dx_exact, dk_exact = exact_grads(dy)

    y, vjp = jax.vjp(lambda x, k: toom_cook.conv_toom_cook(x, k, padding), x, k)
    dx, dk = vjp(jnp.asarray(dy))
    s = toom_cook.scheme(2, r)
    absolute = toom_cook.absolute(s)
    mag_y, mag_vjp = jax.vjp(lambda x, k: toom_cook.conv_toom_cook(x, k, padding, s=absolute),
                             np.abs(x), np.abs(k))
    mag_dx, mag_dk = mag_vjp(jnp.abs(jnp.asarray(dy)))
    path = 4 * s.n + 2 * r + 3
    n, oh, ow, cin = shape[0], *y_exact.shape[1:3], shape[-1]
    tiles = n * -(-oh // 2) * -(-ow // 2)
    for got, exact, magnitude, terms in ((y, y_exact, mag_y, cin), (dx, dx_exact, mag_dx, 6 * r * r),
                                         (dk, dk_exact, mag_dk, tiles)):
        error = np.abs(np.asarray(got, np.float64) - exact)
        bound = gamma(path + terms) * np.asarray(magnitude, np.float64)
        assert np.all(error <= bound + 1e-30), float(np.max(error / (bound + 1e-30)))
        # ... and the bound is not vacuous: far below the values themselves.
        assert np.max(bound) < 1e-2 * np.max(np.abs(exact))


def test_a_kernel_that_is_not_square_is_one_sentence():
    with pytest.raises(ValueError, match="square kernel"):
        toom_cook.conv_toom_cook(jnp.zeros((1, 8, 8, 2)), jnp.zeros((3, 4, 2, 2)))
