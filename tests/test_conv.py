"""The matmul and hybrid convolutions equal lax.conv: values and gradients, jitted and vmapped.

Only jitted: eagerly the same jax.numpy code runs op by op, and compiling every op of a 49-slice
im2col one at a time made this file the slowest of the suite. Kernel sizes 1, 3, 4 (even: the
asymmetric SAME padding) and 5 cover every size the zoo uses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax.models import layers

CONFIGS = [(k, s, p) for k in (1, 3, 4, 5) for s in (1, 2) for p in ("SAME", "VALID")]
OWN_IMPLS = {"matmul": layers.conv_matmul, "hybrid": layers.conv_hybrid}


def _inputs(k, cin=3, cout=4, size=11, batch=2, seed=0):
    kx, kk = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, (batch, size, size, cin)),
            jax.random.normal(kk, (k, k, cin, cout)) / k)


@pytest.mark.parametrize("impl", OWN_IMPLS)
@pytest.mark.parametrize("k, stride, padding", CONFIGS)
def test_values_and_gradients_match_lax_conv(impl, k, stride, padding):
    conv = OWN_IMPLS[impl]
    x, w = _inputs(k)
    strides = (stride, stride)
    ref = layers.conv_xla(x, w, strides, padding)
    jitted = jax.jit(conv, static_argnums=(2, 3))
    np.testing.assert_allclose(jitted(x, w, strides, padding), ref, rtol=1e-5, atol=1e-5)

    def loss(fn):
        # A non-uniform cotangent, so every output position matters.
        return lambda x, w: (fn(x, w, strides, padding) * jnp.cos(jnp.arange(ref.size).reshape(ref.shape))).sum()

    rx, rw = jax.jit(jax.grad(loss(layers.conv_xla), argnums=(0, 1)))(x, w)
    gx, gw = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(x, w)
    np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, rw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k, padding", [(3, "SAME"), (4, "SAME"), (4, "VALID"), (5, "SAME")])
@pytest.mark.parametrize("cin", [1, 8])
def test_hybrid_gradients_for_both_input_gradient_paths(k, padding, cin):
    # cin < 8 takes the input gradient through the patches, cin >= 8 through lax.conv.
    x, w = _inputs(k, cin=cin, cout=16, size=10)
    ct = jnp.cos(jnp.arange(10 * 10 * 16 * 2)).reshape(2, 10, 10, 16)
    ref = layers.conv_xla(x, w, (1, 1), padding)
    ct = ct[:, : ref.shape[1], : ref.shape[2]]
    grads = lambda fn: jax.jit(jax.grad(lambda x, w: (fn(x, w, (1, 1), padding) * ct).sum(), (0, 1)))(x, w)
    for got, want in zip(grads(layers.conv_hybrid), grads(layers.conv_xla)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_hybrid_forward_under_grad_equals_its_primal():
    # The custom VJP computes the forward by matmul under differentiation and by lax.conv
    # otherwise; both must give the same activations (to float rounding).
    x, w = _inputs(3, cin=16, cout=8, size=14)
    primal = layers.conv_hybrid(x, w)
    under_grad, _ = jax.vjp(lambda w: layers.conv_hybrid(x, w), w)
    np.testing.assert_allclose(under_grad, primal, rtol=1e-5, atol=1e-5)


def test_hybrid_second_input_gradient_matches_lax_conv():
    # The input gradient is itself a lax.conv, so gradients of gradients (e.g. a gradient
    # penalty) stay exact with respect to the input.
    x, w = _inputs(3)
    g = lambda fn: jax.jit(jax.grad(lambda x: (jax.grad(lambda x: (fn(x, w) ** 2).sum())(x) ** 2).sum()))(x)
    np.testing.assert_allclose(g(layers.conv_hybrid), g(layers.conv_xla), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", OWN_IMPLS)
@pytest.mark.parametrize("k, stride", [(3, 1), (5, 2), (1, 2), (4, 1)])
def test_vmap_over_kernels(impl, k, stride):
    conv = OWN_IMPLS[impl]
    x, _ = _inputs(k)
    ws = jax.random.normal(jax.random.key(3), (4, k, k, 3, 4))
    fn = lambda impl: jax.jit(jax.vmap(lambda w: impl(x, w, (stride, stride), "SAME")))
    np.testing.assert_allclose(fn(conv)(ws), fn(layers.conv_xla)(ws), rtol=1e-5, atol=1e-5)
    grads = lambda impl: jax.jit(jax.vmap(jax.grad(lambda w: (impl(x, w, (stride, stride), "SAME") ** 2).sum())))(ws)
    np.testing.assert_allclose(grads(conv), grads(layers.conv_xla), rtol=1e-4, atol=1e-3)


def test_parameters_are_interchangeable_between_impls():
    x = jnp.ones((2, 9, 9, 3))
    conv = {impl: layers.Conv(5, (3, 3), impl=impl) for impl in ("xla", "matmul", "hybrid")}
    variables = conv["xla"].init(jax.random.key(0), x)
    for impl in ("matmul", "hybrid"):
        assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, conv[impl].init(jax.random.key(0), x))
        np.testing.assert_allclose(conv[impl].apply(variables, x), conv["xla"].apply(variables, x),
                                   rtol=1e-5, atol=1e-5)


def test_auto_resolves_per_backend():
    assert layers.resolve_conv_impl("auto", "cpu") == "winograd"
    assert layers.resolve_conv_impl("auto", "gpu") == "xla"
    assert layers.resolve_conv_impl("xla", "cpu") == "xla"
    with pytest.raises(ValueError, match="unknown conv implementation"):
        layers.resolve_conv_impl("fft")


@pytest.mark.parametrize("size", [28, 11, 7])
def test_max_pool_matches_flax_values_and_gradients(size):
    import flax.linen as nn
    x = jax.random.normal(jax.random.key(size), (2, size, size, 3))   # no ties
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(layers.max_pool(x), ref(x))
    weights = jax.random.normal(jax.random.key(1), ref(x).shape)
    grad = lambda fn: jax.jit(jax.grad(lambda x: (fn(x) * weights).sum()))(x)
    np.testing.assert_allclose(grad(layers.max_pool), grad(ref), rtol=1e-6)


@pytest.mark.parametrize("kernel,padding", [((3, 3), "SAME"), ((4, 4), "VALID")])
def test_conv_pool_equals_pooling_the_biased_map(kernel, padding):
    """Conv(x, pool=2) pools before the bias add: the same values exactly, the same gradients to rounding."""
    x = jax.random.normal(jax.random.key(0), (3, 13, 13, 8))
    conv = layers.Conv(6, kernel, padding=padding, impl="winograd")
    variables = conv.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda v: v + 0.3, variables)   # a non-zero bias
    pooled, full = conv.apply(variables, x, pool=2)
    np.testing.assert_array_equal(full, conv.apply(variables, x))
    np.testing.assert_array_equal(pooled, layers.max_pool(full))
    weights = jax.random.normal(jax.random.key(2), pooled.shape)
    loss_pooled = lambda v: (conv.apply(v, x, pool=2)[0] * weights).sum()
    loss_after = lambda v: (layers.max_pool(conv.apply(v, x)) * weights).sum()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 jax.jit(jax.grad(loss_pooled))(variables), jax.jit(jax.grad(loss_after))(variables))


@pytest.mark.parametrize("size", [2, 3])
def test_max_pool_gives_tied_windows_gradient_to_their_first_maximum_as_flax(size):
    import flax.linen as nn
    # Rounded values: many windows hold two or more equal maxima (and a remainder row/column).
    x = jnp.round(jax.random.normal(jax.random.key(3), (2, 3 * size + 1, 2 * size + 1, 4)))
    ref = lambda x: nn.max_pool(x, (size, size), strides=(size, size))
    np.testing.assert_array_equal(layers.max_pool(x, size), ref(x))
    weights = jax.random.normal(jax.random.key(4), ref(x).shape)
    grad = lambda fn: jax.jit(jax.grad(lambda x: (fn(x) * weights).sum()))(x)
    ours = grad(lambda x: layers.max_pool(x, size))
    np.testing.assert_array_equal(ours, grad(ref))
    assert int((ours != 0).sum()) == weights.size       # one element a window, none in the remainder


def test_max_pool_propagates_nan_and_vmaps():
    x = jnp.zeros((3, 4, 4, 2)).at[1, 1, 2, 0].set(jnp.nan)
    pooled = jax.vmap(lambda x: layers.max_pool(x[None])[0])(x)
    assert bool(jnp.isnan(pooled[1, 0, 1, 0])) and int(jnp.isnan(pooled).sum()) == 1
    g = jax.grad(lambda x: jnp.nansum(layers.max_pool(x)))(x)
    assert bool(jnp.isfinite(g).all())
