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

from fmnist_jax.models import layers, toom_cook, winograd

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
    pads = winograd.padding_pairs(padding, r)
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


def test_chunks_scan_and_remainder_equal_one_chunk():
    # Batch 5 in chunks of 2: two chunks through the scan, a remainder of one. The same sums in
    # the same order per image, so values and the input gradient agree to the last bits; the
    # kernel gradient is summed over chunks in another order (a few ulps).
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(5, 9, 9, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 4, 8, 6)) / 4, jnp.float32)
    dy = jnp.asarray(rng.normal(size=(5, 6, 6, 6)), jnp.float32)

    def value_and_grads(chunk):
        y, vjp = jax.vjp(lambda x, k: toom_cook.conv_toom_cook(x, k, "VALID", chunk=chunk), x, k)
        return (y, *vjp(dy))

    one, chunked = jax.jit(lambda: value_and_grads(5))(), jax.jit(lambda: value_and_grads(2))()
    for a, b, name in zip(one, chunked, ("value", "input gradient", "kernel gradient")):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()), err_msg=name)


def test_second_derivatives_match_lax_conv():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 8, 8, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 4, 8, 4)) / 4, jnp.float32)
    ct = jnp.asarray(rng.normal(size=(3, 8, 8, 4)), jnp.float32)
    lax_conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    tc_conv = lambda x, k: toom_cook.conv_toom_cook(x, k, "SAME", chunk=2)

    def mixed(conv):   # d/dk <x, d/dx <ct, conv(x, k)>>
        return jax.grad(lambda k: (jax.grad(lambda x: (conv(x, k) * ct).sum())(x) * x).sum())(k)

    want, got = jax.jit(lambda: mixed(lax_conv))(), jax.jit(lambda: mixed(tc_conv))()
    np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.abs(want).max()))


def test_primal_xla_is_lax_conv_and_winograd_training_gradients_stay():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 7, 7, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 4, 8, 3)) / 4, jnp.float32)
    lax_conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    conv = lambda x, k: toom_cook.conv_toom_cook(x, k, "SAME", primal="xla")
    np.testing.assert_array_equal(jax.jit(conv)(x, k), jax.jit(lax_conv)(x, k))
    got = jax.jit(jax.grad(lambda k: (conv(x, k) ** 2).sum()))(k)
    want = jax.jit(jax.grad(lambda k: (lax_conv(x, k) ** 2).sum()))(k)
    np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.abs(want).max()))


def test_the_winograd_impl_routes_4x4_kernels_here_and_matches_xla():
    # seed 003's second convolution shape class (4x4 VALID, 8+ input channels) trains through
    # F(2x2, 4x4) under conv_impl="winograd"; value and kernel gradient equal lax.conv's.
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(4, 14, 14, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 4, 8, 5)) / 4, jnp.float32)
    routed = lambda x, k: layers.conv_winograd_or_hybrid(x, k, (1, 1), "VALID")
    # Differentiated, no XLA convolution is left (the forward is Winograd too); evaluated, it is lax.conv.
    grad_hlo = jax.jit(jax.grad(lambda k: routed(x, k).sum())).lower(k).as_text()
    assert "convolution" not in grad_hlo and "dot_general" in grad_hlo
    assert "convolution" in jax.jit(routed).lower(x, k).as_text()
    want = layers.conv_xla(x, k, (1, 1), "VALID")
    np.testing.assert_allclose(jax.jit(routed)(x, k), want, atol=1e-5 * float(jnp.abs(want).max()))
    got_dk = jax.jit(jax.grad(lambda k: (routed(x, k) ** 2).sum()))(k)
    want_dk = jax.grad(lambda k: (layers.conv_xla(x, k, (1, 1), "VALID") ** 2).sum())(k)
    np.testing.assert_allclose(got_dk, want_dk, atol=1e-4 * float(jnp.abs(want_dk).max()))


@pytest.mark.parametrize("m, r", [(2, 4), (3, 4), (2, 3)])
def test_the_written_out_output_transpose_is_jaxs_transpose(m, r):
    s = toom_cook.scheme(m, r)
    n_img, th, tw, c = 2, 3, 4, 5
    prod_shape = jax.ShapeDtypeStruct((s.n * s.n, n_img * th * tw, c), jnp.float32)
    dy = jnp.asarray(np.random.default_rng(m + r).normal(size=(n_img, m * th, m * tw, c)), jnp.float32)
    (want,) = jax.linear_transpose(lambda p: toom_cook.output_transform(p, n_img, th, tw, s), prod_shape)(dy)
    got = toom_cook.output_transform_transpose(dy, th, tw, s)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
