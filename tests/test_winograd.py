"""Winograd F(2x2, 3x3) equals lax.conv within its rounding-error bound: values, input and kernel
gradients, eagerly, jitted, vmapped over kernels and differentiated twice.

The error bound. Winograd computes every output as sums of products: input tiles transformed
by B^T (. ) B, kernels by G (.) G^T, 16 products summed over channels, then A^T (.) A. For any
algorithm that forms a sum of products through n successive roundings along every path, the
standard bound (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3) is

    |computed - exact| <= gamma_n * magnitude,   gamma_n = n u / (1 - n u),  u = 2**-24,

where `magnitude` is the same algorithm run on |inputs| with |transform matrices|. That is why
Winograd is less accurate than a direct convolution: the transforms' coefficients (G's 1/2s,
the +-1 sums of B and A) make `magnitude` larger than |x| * |g|, and it grows with the number
of summed terms (channels for values and input gradients, batch x positions for the kernel
gradient). `_Reference` below computes the exact result (float64) and `magnitude` with the
textbook tile-by-tile algorithm, so the tolerance is the bound itself, not a chosen constant.
Rounding counts along a path (additions of k terms in any order cost k - 1 roundings; a
multiplication by 1/2 is exact):
  values:          B^T d B 2, G g G^T 4, product 1, channel sum cin, A^T m A 4  -> cin + 11
  input gradient:  A dy A^T 2, G g G^T 4, product 1, sum over cout, B du B^T 4,
                   overlapping tiles 2                                          -> cout + 13
  kernel gradient: B^T d B 2, A dy A^T 2, product 1, sum over tiles (all
                   chunks), G^T dv G 6                                          -> tiles + 11
lax.conv obeys the direct-convolution bound gamma_{terms} * (|x| * |g|); the two bounds added
bound the difference between Winograd and lax.conv.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from numpy.lib.stride_tricks import sliding_window_view

from fmnist_jax.models import layers, winograd

U = 2.0**-24
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def gamma(n):
    return n * U / (1 - n * U)


def _pads(padding):
    return {"SAME": ((1, 1), (1, 1)), "VALID": ((0, 0), (0, 0))}.get(padding, padding)


class _Reference:
    """Textbook F(2x2, 3x3) in float64, tile by tile. With absolute=True every input and transform
    matrix is replaced by its absolute value: the result is the `magnitude` of the error bound."""

    def __init__(self, x, padding, absolute=False):
        f = np.abs if absolute else (lambda a: a)
        self.f, self.bt, self.g, self.at = f, f(BT), f(G), f(AT)
        (t, b), (l, r) = _pads(padding)
        n, h, w, c = x.shape
        self.out = (h + t + b - 2, w + l + r - 2)
        self.tiles = (-(-self.out[0] // 2), -(-self.out[1] // 2))
        self.pads = ((0, 0), (t, b + 2 * self.tiles[0] - self.out[0]), (l, r + 2 * self.tiles[1] - self.out[1]),
                     (0, 0))
        xp = np.pad(f(np.asarray(x, np.float64)), self.pads)
        tiles = sliding_window_view(xp, (4, 4), axis=(1, 2))[:, ::2, ::2]          # [n, th, tw, c, 4, 4]
        self.x_shape = x.shape
        self.u = np.einsum("ak,bl,nijckl->nijabc", self.bt, self.bt, tiles)

    def v(self, kernel):
        return np.einsum("ak,bl,klco->abco", self.g, self.g, self.f(np.asarray(kernel, np.float64)))

    def values(self, kernel):
        m = np.einsum("nijabc,abco->nijabo", self.u, self.v(kernel))
        y = np.einsum("ra,sb,nijabo->nirjso", self.at, self.at, m)
        n, th, _, tw, _, o = y.shape
        return y.reshape(n, 2 * th, 2 * tw, o)[:, : self.out[0], : self.out[1]]

    def _dm(self, dy):
        extra = ((0, 0), (0, 2 * self.tiles[0] - self.out[0]), (0, 2 * self.tiles[1] - self.out[1]), (0, 0))
        dy = np.pad(self.f(np.asarray(dy, np.float64)), extra)
        n, o = dy.shape[0], dy.shape[-1]
        dy = dy.reshape(n, self.tiles[0], 2, self.tiles[1], 2, o)
        return np.einsum("ra,sb,nirjso->nijabo", self.at, self.at, dy)

    def input_gradient(self, kernel, dy):
        du = np.einsum("nijabo,abco->nijabc", self._dm(dy), self.v(kernel))
        dt = np.einsum("ak,bl,nijabc->nijklc", self.bt, self.bt, du)
        n, h, w, c = self.x_shape
        th, tw = self.tiles
        dxp = np.zeros((n, 2 * th + 2, 2 * tw + 2, c))
        for k in range(4):
            for l in range(4):
                dxp[:, k: k + 2 * th: 2, l: l + 2 * tw: 2] += dt[:, :, :, k, l]
        return dxp[:, self.pads[1][0]: self.pads[1][0] + h, self.pads[2][0]: self.pads[2][0] + w]

    def kernel_gradient(self, dy):
        dv = np.einsum("nijabc,nijabo->abco", self.u, self._dm(dy))
        return np.einsum("ak,bl,abco->klco", self.g, self.g, dv)


def _direct_magnitude(x, kernel, padding):
    """|x| * |g| (a direct convolution of absolute values) in float64: lax.conv's error magnitude."""
    (t, b), (l, r) = _pads(padding)
    xp = np.pad(np.abs(np.asarray(x, np.float64)), ((0, 0), (max(t, 0), max(b, 0)), (max(l, 0), max(r, 0)), (0, 0)))
    xp = xp[:, max(-t, 0): xp.shape[1] - max(-b, 0), max(-l, 0): xp.shape[2] - max(-r, 0)]   # negative: crop
    windows = sliding_window_view(xp, (3, 3), axis=(1, 2))                             # [n, oh, ow, c, 3, 3]
    return np.einsum("nijckl,klco->nijo", windows, np.abs(np.asarray(kernel, np.float64)))


def _inputs(batch, size, cin, cout, seed=0):
    kx, kw, kd = jax.random.split(jax.random.key(seed), 3)
    h, w = size if isinstance(size, tuple) else (size, size)
    return (jax.random.normal(kx, (batch, h, w, cin)), jax.random.normal(kw, (3, 3, cin, cout)) / 3,
            kd)


def _lax_conv(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _within(got, exact, bound, what):
    err = np.abs(np.asarray(got, np.float64) - exact)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def _values_and_vjp(conv, x, w, dy):
    y, vjp = jax.vjp(conv, x, w)
    return (y, *vjp(dy))


def _check_all(conv, x, w, dy, padding, jit=True):
    """conv's values and VJP against float64 within the Winograd bound, and against lax.conv within
    the sum of the Winograd and direct-convolution bounds."""
    cin, cout = w.shape[2:]
    y, dx, dw = (jax.jit(_values_and_vjp, static_argnums=0) if jit else _values_and_vjp)(conv, x, w, dy)
    exact, mag = _Reference(x, padding), _Reference(x, padding, absolute=True)
    tiles = x.shape[0] * exact.tiles[0] * exact.tiles[1]
    checks = [("values", y, exact.values(w), gamma(cin + 11) * mag.values(w)),
              ("input gradient", dx, exact.input_gradient(w, dy), gamma(cout + 13) * mag.input_gradient(w, dy)),
              ("kernel gradient", dw, exact.kernel_gradient(dy), gamma(tiles + 11) * mag.kernel_gradient(dy))]
    for what, got, want, bound in checks:
        _within(got, want, bound, f"{what} vs float64")

    ry, rdx, rdw = _values_and_vjp(functools.partial(_lax_conv, padding=padding), x, w, dy)
    flipped = np.flip(np.asarray(w), (0, 1)).transpose(0, 1, 3, 2)
    oh, ow = y.shape[1:3]
    direct = [_direct_magnitude(x, w, padding),
              _direct_magnitude(dy, flipped, tuple((2 - a, 2 - b) for a, b in _pads(padding))),
              np.einsum("nklcij,nijo->klco",
                        sliding_window_view(np.pad(np.abs(np.asarray(x, np.float64)),
                                                   ((0, 0), *_pads(padding), (0, 0))), (oh, ow), axis=(1, 2)),
                        np.abs(np.asarray(dy, np.float64)))]
    terms = [9 * cin, 9 * cout, x.shape[0] * oh * ow]
    for (what, got, _, bound), ref, d, n in zip(checks, (ry, rdx, rdw), direct, terms):
        _within(got, np.asarray(ref, np.float64), bound + gamma(n) * d, f"{what} vs lax.conv")


# (batch, size, cin, cout, padding, chunk, jit): odd and even sizes, every padding kind, batches
# that are and are not a multiple of the chunk, a chunk larger than the batch, 1 and many
# channels; one case eager. (Few cases: each compiles a forward and a backward program.)
CASES = [
    (5, 7, 1, 4, "SAME", 2, True),
    (4, (6, 9), 16, 8, "VALID", 2, True),
    (2, 5, 3, 2, ((2, 0), (1, 3)), None, True),
    (1, 3, 2, 3, "VALID", None, False),
]


@pytest.mark.parametrize("batch, size, cin, cout, padding, chunk, jit", CASES)
def test_values_and_gradients_within_the_error_bound(batch, size, cin, cout, padding, chunk, jit):
    x, w, kd = _inputs(batch, size, cin, cout)
    dy = jax.random.normal(kd, _lax_conv(x, w, padding).shape)
    conv = functools.partial(winograd.conv_winograd, padding=padding, chunk=chunk)
    _check_all(conv, x, w, dy, padding, jit)


def test_primal_xla_is_lax_conv_and_training_forward_is_winograd():
    # primal="xla" changes only the value computed without differentiation.
    x, w, kd = _inputs(3, 6, 8, 4)
    dy = jax.random.normal(kd, (3, 6, 6, 4))
    conv = functools.partial(winograd.conv_winograd, padding="SAME", chunk=2, primal="xla")
    np.testing.assert_array_equal(jax.jit(conv)(x, w), jax.jit(_lax_conv, static_argnums=2)(x, w, "SAME"))
    _check_all(conv, x, w, dy, "SAME")


def test_vmap_over_kernels():
    x, _, kd = _inputs(3, 6, 8, 4)
    ws = jax.random.normal(jax.random.key(7), (3, 3, 3, 8, 4)) / 3
    dy = jax.random.normal(kd, (3, 6, 6, 4))
    conv = functools.partial(winograd.conv_winograd, padding="SAME", chunk=2)
    ys, dws = jax.jit(jax.vmap(lambda w: (lambda y, vjp: (y, vjp(dy)[0]))(*jax.vjp(lambda w: conv(x, w), w))))(ws)
    exact, mag = _Reference(x, "SAME"), _Reference(x, "SAME", absolute=True)
    for w, y, dw in zip(ws, ys, dws):
        _within(y, exact.values(w), gamma(8 + 11) * mag.values(w), "vmapped values")
        _within(dw, exact.kernel_gradient(dy), gamma(3 * 9 + 11) * mag.kernel_gradient(dy), "vmapped kernel gradient")


def test_second_derivatives():
    # d/dw <r, d/dx <ct, conv(x, w)>> is the kernel gradient of a convolution of r with output
    # gradient ct: the same sums, the same bound. d/dx <r, d/dx |conv(x, w)|^2 / 2> is
    # conv^T(conv(r, w), w): a forward then an input gradient, whose errors add (the backward
    # being linear and monotone in magnitudes).
    x, w, kd = _inputs(3, 7, 8, 8)
    ct, r = jax.random.normal(kd, (2, 3, 7, 7, 8))
    conv = functools.partial(winograd.conv_winograd, padding="SAME", chunk=2)
    grad_x = lambda w: jax.grad(lambda x: (conv(x, w) * ct).sum())(x)
    second_x = lambda x: jax.grad(lambda x: (jax.grad(lambda x: (conv(x, w) ** 2).sum() / 2)(x) * r).sum())(x)
    mixed, hess_x = jax.jit(lambda x, w: (jax.grad(lambda w: (grad_x(w) * r).sum())(w), second_x(x)))(x, w)
    exact, mag = _Reference(r, "SAME"), _Reference(r, "SAME", absolute=True)
    _within(mixed, exact.kernel_gradient(ct), gamma(3 * 16 + 11) * mag.kernel_gradient(ct), "mixed second derivative")

    forward = mag.values(w)
    bound = (gamma(8 + 11) + gamma(8 + 13) + gamma(8 + 11) * gamma(8 + 13)) * mag.input_gradient(w, forward)
    _within(hess_x, exact.input_gradient(w, exact.values(w)), bound, "second input derivative")


def test_chunk_rule_fits_the_cache_fraction():
    for h, cin, cout in [(28, 64, 64), (14, 64, 128), (28, 1, 64), (200, 512, 512)]:
        chunk = winograd.chunk_size(h, h, cin, cout)
        assert chunk >= 1
        per_image = 4 * 16 * (h // 2) ** 2 * (cin + cout)
        if chunk > 1:
            assert chunk * per_image <= winograd.last_level_cache_bytes()
        default = winograd.default_chunk(250, h, h, cin, cout)
        assert default <= chunk and (250 % default == 0 or default > chunk // 2)


def _loop_bodies(jaxpr, inside=False):
    """(inside a loop?, equation) for every equation of a jaxpr and its sub-jaxprs."""
    for eqn in jaxpr.eqns:
        yield inside, eqn
        loop = inside or eqn.primitive.name in ("scan", "while")
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _loop_bodies(sub, loop)


def test_filter_transform_runs_once_per_call():
    # G g G^T (and its transpose for the kernel gradient) is computed outside the loop over
    # chunks: no equation inside a loop touches a 3x3 kernel or G (4x3).
    x, w, _ = _inputs(6, 8, 8, 8)
    conv = functools.partial(winograd.conv_winograd, padding="SAME", chunk=2)
    jaxpr = jax.make_jaxpr(jax.grad(lambda x, w: conv(x, w).sum(), (0, 1)))(x, w).jaxpr
    shapes = lambda eqn: {tuple(getattr(v.aval, "shape", ())) for v in (*eqn.invars, *eqn.outvars)}
    seen = {"loop": 0, "top": 0}
    for inside, eqn in _loop_bodies(jaxpr):
        touches = bool(shapes(eqn) & {(3, 3, 8, 8), (4, 3)})
        seen["loop" if inside else "top"] += touches and eqn.primitive.name == "dot_general"
    assert seen["loop"] == 0 and seen["top"] > 0


class _TwoConvs(nn.Module):
    impl: str

    @nn.compact
    def __call__(self, x):
        x = nn.relu(layers.Conv(8, impl=self.impl)(x))         # 1 input channel: the hybrid path
        return layers.Conv(5, padding="VALID", impl=self.impl)(x)   # 8 input channels: Winograd


def test_parameters_interchangeable_with_other_impls():
    x = jax.random.normal(jax.random.key(0), (3, 9, 9, 1))
    variables = jax.jit(_TwoConvs("xla").init)(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, jax.eval_shape(_TwoConvs("winograd").init, jax.random.key(1), x))
    want = jax.jit(_TwoConvs("xla").apply)(variables, x)
    got = jax.jit(_TwoConvs("winograd").apply)(variables, x)
    # Two layers of at most 9 * 8 summed terms, O(1) values: relative errors of a few gamma_{83}
    # (5e-6) times the Winograd magnitude ratio; 1e-4 of the largest logit leaves room for both.
    np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.abs(want).max()))
    assert layers.resolve_conv_impl("winograd", "cpu") == "winograd"


def test_small_maps_evaluate_through_winograd_large_ones_through_lax_conv():
    # Evaluation (no differentiation) of a 3x3 layer: lax.conv on a 9x9 map, Winograd's forward on
    # a 4x4 one (XLA CPU's convolution is slow on small maps); values equal lax.conv's either way.
    for size, expect_conv in ((9, True), (4, False)):
        x = jax.random.normal(jax.random.key(size), (2, size, size, 8))
        w = jax.random.normal(jax.random.key(1), (3, 3, 8, 8)) / 3
        routed = functools.partial(layers.conv_winograd_or_hybrid, strides=(1, 1), padding="SAME")
        assert ("convolution" in jax.jit(routed).lower(x, w).as_text()) == expect_conv
        want = layers.conv_xla(x, w, (1, 1), "SAME")
        np.testing.assert_allclose(jax.jit(routed)(x, w), want, atol=1e-5 * float(jnp.abs(want).max()))
