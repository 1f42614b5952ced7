"""The matmul convolution equals lax.conv: values and gradients, eagerly, jitted and vmapped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax.models import layers

CONFIGS = [(k, s, p) for k in (1, 3, 4, 5, 7) for s in (1, 2) for p in ("SAME", "VALID")]


def _inputs(k, cin=3, cout=4, size=11, batch=2, seed=0):
    kx, kk = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, (batch, size, size, cin)),
            jax.random.normal(kk, (k, k, cin, cout)) / k)


@pytest.mark.parametrize("k, stride, padding", CONFIGS)
def test_values_and_gradients_match_lax_conv(k, stride, padding):
    x, w = _inputs(k)
    strides = (stride, stride)
    ref = layers.conv_xla(x, w, strides, padding)
    np.testing.assert_allclose(layers.conv_matmul(x, w, strides, padding), ref, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(layers.conv_matmul, static_argnums=(2, 3))
    np.testing.assert_allclose(jitted(x, w, strides, padding), ref, rtol=1e-5, atol=1e-5)

    def loss(fn):
        # A non-uniform cotangent, so every output position matters.
        return lambda x, w: (fn(x, w, strides, padding) * jnp.cos(jnp.arange(ref.size).reshape(ref.shape))).sum()

    gx, gw = jax.grad(loss(layers.conv_matmul), argnums=(0, 1))(x, w)
    rx, rw = jax.grad(loss(layers.conv_xla), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, rw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k, stride", [(3, 1), (5, 2), (1, 2)])
def test_vmap_over_kernels(k, stride):
    x, _ = _inputs(k)
    ws = jax.random.normal(jax.random.key(3), (4, k, k, 3, 4))
    fn = lambda impl: jax.jit(jax.vmap(lambda w: impl(x, w, (stride, stride), "SAME")))
    np.testing.assert_allclose(fn(layers.conv_matmul)(ws), fn(layers.conv_xla)(ws), rtol=1e-5, atol=1e-5)
    grads = lambda impl: jax.vmap(jax.grad(lambda w: (impl(x, w, (stride, stride), "SAME") ** 2).sum()))(ws)
    np.testing.assert_allclose(grads(layers.conv_matmul), grads(layers.conv_xla), rtol=1e-4, atol=1e-3)


def test_parameters_are_interchangeable_between_impls():
    x = jnp.ones((2, 9, 9, 3))
    conv = {impl: layers.Conv(5, (3, 3), impl=impl) for impl in ("xla", "matmul")}
    variables = conv["xla"].init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, conv["matmul"].init(jax.random.key(0), x))
    np.testing.assert_allclose(conv["matmul"].apply(variables, x), conv["xla"].apply(variables, x),
                               rtol=1e-5, atol=1e-5)


def test_auto_resolves_per_backend_and_context():
    assert layers.resolve_conv_impl("auto", "cpu") == "matmul"
    assert layers.resolve_conv_impl("auto", "gpu") == "xla"
    assert layers.resolve_conv_impl("xla", "cpu") == "xla"
    with layers.conv_impl("xla"):
        assert layers.resolve_conv_impl("auto", "cpu") == "xla"
    with pytest.raises(ValueError, match="unknown conv implementation"):
        with layers.conv_impl("fft"):
            pass


@pytest.mark.parametrize("size", [28, 11, 7])
def test_max_pool_matches_flax_values_and_gradients(size):
    import flax.linen as nn
    x = jax.random.normal(jax.random.key(size), (2, size, size, 3))   # no ties
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(layers.max_pool(x), ref(x))
    weights = jax.random.normal(jax.random.key(1), ref(x).shape)
    grad = lambda fn: jax.grad(lambda x: (fn(x) * weights).sum())(x)
    np.testing.assert_allclose(grad(layers.max_pool), grad(ref), rtol=1e-6)
