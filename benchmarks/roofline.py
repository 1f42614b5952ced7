"""How far a benchmark runs from this machine's limit: FLOPs of the work and the matmul peak.

    peak = matmul_peak_gflops()                        # this machine, measured now
    flops = training_flops_per_image(cfg)              # XLA's count for one training image
    print(fraction_of_peak(flops * images_per_second, peak))

The FLOPs are *model* FLOPs: XLA's cost analysis of the step written with `lax.conv` (conv_impl
"xla"), whichever implementation is timed, so every implementation and peer is measured against
the same work (the convention of MFU figures). A Winograd convolution multiplies less than the
direct one, so its fraction can read higher than the multiplies it really does.

The peak is a float32 matmul of two N x N matrices through XLA on every core of this machine, the
best case of the arithmetic every convolution here is lowered to (a convolution as a matmul, or
Winograd's batched matmuls).

  python -m benchmarks.roofline                      # the peak, and every preset's model FLOPs an image
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks.timing import median_seconds
from fmnist_jax import models
from fmnist_jax.config import TrainConfig
from fmnist_jax.training import step


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a jitted float32 [n, n] @ [n, n] (2 n^3 FLOPs), median of `repeats` timings."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    return 2 * n ** 3 / median_seconds(lambda: matmul(a, b).block_until_ready(), repeats) / 1e9


def compiled_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` (arrays or jax.ShapeDtypeStruct) as XLA's cost analysis counts them."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):          # older jax: one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def training_flops_per_image(cfg: TrainConfig, batch: int | None = None) -> float:
    """Model FLOPs of one training image: forward, backward and the optimizer update of `cfg`'s
    step (augmentation switched off) at `batch` (default cfg.batch; the update's share shrinks as
    the batch grows), counted on the lax.conv formulation and divided by the batch."""
    batch = batch or cfg.batch
    cfg = dataclasses.replace(cfg, conv_impl="xla", augment=(), batch=batch)
    model = step.build_model(cfg)
    tx = step.make_optimizer(cfg, 1)
    train_step = step.make_train_step(model, cfg, 1)
    state = jax.eval_shape(lambda k: step.init_state(model, tx, k, step.HParams.create(cfg)), jax.random.key(0))
    images = jax.ShapeDtypeStruct((batch, 28, 28), jnp.uint8)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return compiled_flops(lambda s, x, y, k: train_step(s, x, y, k), state, images, labels, key) / batch


def inference_flops_per_image(cfg: TrainConfig, batch: int = 32) -> float:
    """Model FLOPs of one image's forward pass in evaluation mode (lax.conv formulation)."""
    model = models.create(cfg.model, **cfg.model_args, conv_impl="xla")
    variables = jax.eval_shape(lambda k: model.init({"params": k, "dropout": k}, jnp.zeros((1, 28, 28, 1)),
                                                    train=False), jax.random.key(0))
    images = jax.ShapeDtypeStruct((batch, 28, 28, 1), jnp.float32)
    return compiled_flops(lambda v, x: model.apply(v, x, train=False), variables, images) / batch


def fraction_of_peak(flops_per_second: float, peak_gflops: float) -> float:
    """Achieved FLOP/s as a fraction of the measured peak (GFLOP/s)."""
    return flops_per_second / (peak_gflops * 1e9)


def rate_columns(flops_per_second: float, peak_gflops: float, width: int = 9) -> str:
    """Two roofline columns: the achieved GFLOP/s and its share of the measured peak."""
    return f"{flops_per_second / 1e9:{width}.1f}{100 * fraction_of_peak(flops_per_second, peak_gflops):8.1f}%"


def roofline_columns(flops_per_image: float, images_per_second: float, peak_gflops: float) -> str:
    """The three roofline columns of a benchmark row: MFLOPs an image, GFLOP/s, % of the peak."""
    return f"{flops_per_image / 1e6:10.1f}" + rate_columns(flops_per_image * images_per_second, peak_gflops)


ROOFLINE_HEADER = f"{'MFLOP/img':>10}{'GFLOP/s':>9}{'of peak':>9}"


def main() -> None:
    """Prints the machine's matmul peak and every preset's model FLOPs an image, training and evaluation."""
    from fmnist_jax import presets

    peak = matmul_peak_gflops()
    print(f"float32 matmul peak, 2048 x 2048, {jax.device_count()} {jax.devices()[0].platform} device(s): "
          f"{peak:.0f} GFLOP/s")
    print(f"{'config':<16}{'train MFLOP/img':>16}{'eval MFLOP/img':>16}  (model FLOPs, XLA's count)")
    for name in presets.NAMES:
        cfg = presets.get(name)
        print(f"{name:<16}{training_flops_per_image(cfg) / 1e6:16.1f}{inference_flops_per_image(cfg) / 1e6:16.1f}",
              flush=True)


if __name__ == "__main__":
    main()
