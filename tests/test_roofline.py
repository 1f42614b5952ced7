"""The roofline's FLOP counts: XLA's cost analysis agrees with counting the multiply-adds by hand."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import roofline
from fmnist_jax.config import TrainConfig

MLP_LAYERS = ((784, 512), (512, 256), (256, 10))


def test_a_matmul_counts_two_flops_a_multiply_add():
    a, b = jax.ShapeDtypeStruct((64, 96), jnp.float32), jax.ShapeDtypeStruct((96, 32), jnp.float32)
    assert roofline.compiled_flops(jnp.matmul, a, b) == pytest.approx(2 * 64 * 96 * 32, rel=0.01)


def test_the_mlps_forward_and_training_flops_match_its_layers():
    cfg = TrainConfig(model="mlp", augment=())
    forward = sum(2 * n_in * n_out for n_in, n_out in MLP_LAYERS)
    # The forward pass is its matmuls (plus a few per-element operations).
    assert roofline.inference_flops_per_image(cfg) == pytest.approx(forward, rel=0.02)
    # Training: the forward pass, the weight gradients, and the input gradients of every layer but
    # the first (the images need none): about three forward passes, less the first layer's share,
    # and Adam's update (about 16 FLOPs a parameter a step), spread over the batch.
    first, params = 2 * 784 * 512, sum((n_in + 1) * n_out for n_in, n_out in MLP_LAYERS)
    for batch in (32, 1024):
        expected = 3 * forward - first + 16 * params / batch
        assert roofline.training_flops_per_image(cfg, batch) == pytest.approx(expected, rel=0.04)


def test_a_convolution_counts_its_direct_multiply_adds():
    cfg = TrainConfig(model="speedrun", model_args={"widths": (8, 8, 8), "whiten": False}, augment=())
    flops = roofline.inference_flops_per_image(cfg)
    # The first block's 3x3 convolution from one channel at 28x28 alone is 2 * 28 * 28 * 9 * 8 FLOPs,
    # the second's 2 * 14 * 14 * 9 * 8 * 8: the count includes at least both.
    assert flops > 2 * 28 * 28 * 9 * 8 + 2 * 14 * 14 * 9 * 64


def test_the_fraction_of_the_peak():
    assert roofline.fraction_of_peak(50e9, 200.0) == pytest.approx(0.25)
    assert "25.0%" in roofline.roofline_columns(1e6, 50e3, 200.0)
