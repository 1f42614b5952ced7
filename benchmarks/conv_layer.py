"""One convolution layer, side by side: forward, and forward + input and kernel gradients.

  python -m benchmarks.conv_layer                       # 64->64 3x3 SAME, batch 250, 28x28
  python -m benchmarks.conv_layer --cin=64 --cout=128 --size=14
  python -m benchmarks.conv_layer --impls=winograd --chunks=5,10,20,40   # the chunk-size rule

Each implementation is jitted alone and timed as the median of --repeats calls after a warm-up;
"fwd+grads" is jax.vjp of the layer followed by its VJP (PyTorch: forward and backward with both
gradients). Ratios are against PyTorch when it is installed, else against XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import roofline
from benchmarks.timing import median_seconds
from fmnist_jax.models import layers, toom_cook, winograd
from fmnist_jax.runs import host_memory

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 250, "Batch size.")
flags.DEFINE_integer("size", 28, "Height and width of the input.")
flags.DEFINE_integer("cin", 64, "Input channels.")
flags.DEFINE_integer("cout", 64, "Output channels.")
flags.DEFINE_integer("kernel", 3, "Kernel height and width (winograd: 3 only; toom_cook: any).")
flags.DEFINE_enum("padding", "SAME", ["SAME", "VALID"], "Padding.")
flags.DEFINE_list("impls", ["xla", "hybrid", "matmul", "winograd", "torch"], "Implementations to time "
                  "(also toom_cook: Winograd F(2x2, kxk) from Toom-Cook matrices, fmnist_jax.models.toom_cook).")
flags.DEFINE_list("chunks", [], "Winograd chunk sizes to time (images per chunk); empty: the cache rule's.")
flags.DEFINE_list("toom_m", ["2"], "toom_cook: output tile sizes m of F(m x m, k x k) to time.")
flags.DEFINE_integer("repeats", 3, "Timings per implementation (the median is reported).")
flags.DEFINE_bool("keep_freed_memory", True, "Set malloc to keep freed memory (fmnist_jax.runs.host_memory).")


def _time_jax(conv, x, w):
    forward = jax.jit(conv)

    @jax.jit
    def forward_and_grads(x, w):
        # y is returned too, or XLA would drop the forward (the cotangent needs only its shape).
        y, vjp = jax.vjp(conv, x, w)
        return y, vjp(jnp.ones_like(y))

    fwd = median_seconds(lambda: jax.block_until_ready(forward(x, w)), FLAGS.repeats)
    both = median_seconds(lambda: jax.block_until_ready(forward_and_grads(x, w)), FLAGS.repeats)
    return fwd, both


def _time_torch(x, w):
    import torch
    xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    wt = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    pad = "same" if FLAGS.padding == "SAME" else "valid"

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wt, padding=pad)

    def forward_and_grads():
        y = torch.nn.functional.conv2d(xt, wt, padding=pad)
        torch.autograd.grad(y, (xt, wt), torch.ones_like(y))

    return median_seconds(forward, FLAGS.repeats), median_seconds(forward_and_grads, FLAGS.repeats)


def main(argv):
    del argv
    kept = FLAGS.keep_freed_memory and host_memory.keep_freed_memory()
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.cin))
    k = FLAGS.kernel
    w = jax.random.normal(kw, (k, k, FLAGS.cin, FLAGS.cout)) / (8 * k)
    pad = FLAGS.padding
    out = FLAGS.size if pad == "SAME" else FLAGS.size - k + 1
    rule = winograd.default_chunk(FLAGS.batch, out, out, FLAGS.cin, FLAGS.cout)
    runs = {}
    for name in FLAGS.impls:
        if name == "winograd":
            if k != 3:
                print("winograd      skipped (F(2x2, 3x3) needs --kernel=3; toom_cook takes any kernel)")
                continue
            for chunk in [int(c) for c in FLAGS.chunks] or [rule]:
                conv = functools.partial(winograd.conv_winograd, padding=pad, chunk=chunk)
                runs[f"winograd/{chunk}"] = lambda conv=conv: _time_jax(conv, x, w)
        elif name == "torch":
            runs["torch"] = lambda: _time_torch(x, w)
        elif name == "toom_cook":
            for m in [int(v) for v in FLAGS.toom_m]:
                tc_rule = winograd.default_chunk(FLAGS.batch, out, out, FLAGS.cin, FLAGS.cout, m=m, r=k)
                for chunk in [int(c) for c in FLAGS.chunks] or [tc_rule]:
                    conv = functools.partial(toom_cook.conv_toom_cook, padding=pad, m=m, chunk=chunk)
                    runs[f"toom_cook{m}/{chunk}"] = lambda conv=conv: _time_jax(conv, x, w)
        else:
            conv = functools.partial(layers.CONV_FUNCTIONS[name], strides=(1, 1), padding=pad)
            runs[name] = lambda conv=conv: _time_jax(conv, x, w)
    print(f"{FLAGS.cin}->{FLAGS.cout} {k}x{k} {pad}, batch {FLAGS.batch}, {FLAGS.size}x{FLAGS.size}; median of "
          f"{FLAGS.repeats}; malloc {'keeps freed memory' if kept else 'defaults'}; winograd chunk rule: "
          f"{rule} images (last-level cache {winograd.last_level_cache_bytes() // 2**20} MiB)")
    results = {}
    for name, run in runs.items():
        try:
            results[name] = run()
        except ImportError as e:
            print(f"{name:<14}skipped ({e.name} is not installed)")
    base_name = "torch" if "torch" in results else "xla"
    base = results.get(base_name)
    # The direct convolution's work: 2 FLOPs a multiply-add; the input and weight gradients are one
    # such convolution each. Every implementation is measured against it (benchmarks.roofline).
    fwd_flops = 2 * FLAGS.batch * out * out * k * k * FLAGS.cin * FLAGS.cout
    peak = roofline.matmul_peak_gflops()
    print(f"direct-convolution work: {fwd_flops / 1e9:.2f} GFLOP forward, {3 * fwd_flops / 1e9:.2f} with both "
          f"gradients; float32 matmul peak of this machine: {peak:.0f} GFLOP/s")
    print(f"{'implementation':<16}{'fwd ms':>9}{'fwd+grads ms':>14}"
          + (f"{'fwd vs ' + base_name:>16}{'f+g vs ' + base_name:>16}" if base else "")
          + f"{'fwd GFLOP/s':>13}{'of peak':>9}{'f+g GFLOP/s':>13}{'of peak':>9}")
    for name, (fwd, both) in results.items():
        line = f"{name:<16}{fwd * 1e3:9.0f}{both * 1e3:14.0f}"
        if base:
            # > 1: faster than the base.
            line += f"{base[0] / fwd:16.2f}{base[1] / both:16.2f}"
        for flops, seconds in ((fwd_flops, fwd), (3 * fwd_flops, both)):
            line += roofline.rate_columns(flops / seconds, peak, width=13)
        print(line, flush=True)


if __name__ == "__main__":
    app.run(main)
