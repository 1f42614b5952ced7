"""Training and evaluation images/second, side by side: fmnist_jax (each conv implementation),
PyTorch (every net of benchmarks.torch_nets: seed002, seed003, seed004_cnn, seed004_resnet,
speedrun_small) and Keras/TensorFlow (seed002, seed003), Adam, batch 250.

  python -m benchmarks.train_throughput                  # peers that are installed
  python -m benchmarks.train_throughput --steps=10 --nets=seed003
  python -m benchmarks.train_throughput --nets=seed004_cnn,seed004_resnet,speedrun_small --frameworks=jax-winograd,torch
  python -m benchmarks.train_throughput --nokeep_freed_memory   # glibc malloc's defaults, for all
  python -m benchmarks.train_throughput --preset=speedrun_long --frameworks=jax-winograd \
      --model_args='{"widths": [64, 128, 256]}'          # a preset's own step, at another width

Same machine, same process, same synthetic batches; every framework gets a warm-up pass first,
then --repeats rounds time each framework's --steps steps one after the other (interleaved:
ours, PyTorch, ours, PyTorch ...), and each rate is the median over the rounds. The ratio column is
fmnist_jax-or-peer images/s divided by PyTorch's (> 1: faster than PyTorch). The roofline
columns (`benchmarks.roofline`) give each row's training work in model FLOPs (XLA's count of the
lax.conv step, the same for every implementation and peer), the GFLOP/s that its rate achieves,
and their fraction of this machine's float32 matmul peak, measured at the start of the run.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, NamedTuple

import numpy as np
from absl import app, flags

from benchmarks import roofline
from benchmarks.timing import interleaved_median_seconds
from fmnist_jax import presets
from fmnist_jax.config import TrainConfig
from fmnist_jax.runs import host_memory

FLAGS = flags.FLAGS
flags.DEFINE_list("nets", ["seed002", "seed003"], "Networks to time.")
flags.DEFINE_list("frameworks", ["jax-hybrid", "jax-matmul", "torch", "keras"],
                  "Implementations to time (also jax-winograd, and jax-xla: XLA's own convolution "
                  "gradients, very slow on CPU).")
flags.DEFINE_integer("batch", 250, "Batch size.")
flags.DEFINE_integer("steps", 8, "Training steps per timing.")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds of timings (each rate is the median over them).")
flags.DEFINE_integer("threads", 0, "Threads for PyTorch/TensorFlow (0: their default).")
flags.DEFINE_string("preset", "", "Time this preset's own training step (its net, model arguments, optimizer, "
                    "batch and augmentations) in the fmnist_jax rows, instead of --nets with plain Adam "
                    "and no augmentation; the peers, whose twins are the plain nets, are skipped.")
flags.DEFINE_string("model_args", "", "The fmnist_jax rows' model arguments as a JSON object (e.g. "
                    "'{\"widths\": [48, 96, 192]}'), replacing the net's or the preset's; peers are skipped.")
flags.DEFINE_bool("keep_freed_memory", True, "Set malloc to keep freed memory (fmnist_jax.runs.host_memory) "
                  "for the whole process, so every framework runs with it; --nokeep_freed_memory: "
                  "glibc's defaults for all.")


class Workload(NamedTuple):
    """One framework's training pass and evaluation pass over `images` images, each blocking."""
    train: Callable[[], object]
    evaluate: Callable[[], object]
    images: int


def _data(n: int):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def jax_config(net: str) -> TrainConfig:
    """What the fmnist_jax rows train: `net` with plain Adam and no augmentation at --batch, or
    with --preset that preset's recipe (batch included); --model_args replaces the net's arguments."""
    if FLAGS.preset:
        cfg = presets.get(FLAGS.preset)
    else:
        cfg = TrainConfig(model=net, batch=FLAGS.batch, augment=())
    if FLAGS.model_args:
        cfg = dataclasses.replace(cfg, model_args=json.loads(FLAGS.model_args))
    cfg = dataclasses.replace(cfg, eval_batch=cfg.batch)
    cfg.validate()
    return cfg


def time_jax(net: str, impl: str, steps: int) -> Workload:
    """The library's own training path (one member): `loop.train_epoch` and `loop.validate`."""
    import jax

    from fmnist_jax.training import loop

    cfg = dataclasses.replace(jax_config(net), conv_impl=impl)
    x, y = _data(cfg.batch * steps)
    everything = np.arange(len(y))
    setup = loop.RunSetup.place(cfg, x, y, everything, everything)
    programs = setup.programs()
    state = [loop.init(setup, programs)]

    def train_run():
        state[0], _, _ = loop.train_epoch(setup, programs, state[0], 0)
        jax.block_until_ready(state[0])

    return Workload(train_run, lambda: loop.validate(setup, programs, state[0].best), len(y))


def time_torch(net: str):
    """The PyTorch twin of `net` (benchmarks/torch_nets.py): its training and evaluation workloads."""
    import torch  # noqa: F401  (fails early, with a clear ImportError, when the bench extra is missing)
    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    x, y = _data(FLAGS.batch * FLAGS.steps)
    xt = torch.from_numpy(x).float().div(255).unsqueeze(1)
    yt = torch.from_numpy(y).long()
    from benchmarks import torch_nets
    model = torch_nets.create(net)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_run():
        model.train()
        for i in range(FLAGS.steps):
            sl = slice(i * FLAGS.batch, (i + 1) * FLAGS.batch)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[sl]), yt[sl]).backward()
            opt.step()

    def eval_run():
        model.eval()
        with torch.no_grad():
            for i in range(FLAGS.steps):
                model(xt[i * FLAGS.batch:(i + 1) * FLAGS.batch]).argmax(1)

    return Workload(train_run, eval_run, len(y))


def time_keras(net: str):
    """The Keras twin of `net` (seed002 and seed003 only): its training and evaluation workloads."""
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers as kl
    x, y = _data(FLAGS.batch * FLAGS.steps)
    x = (x.astype(np.float32) / 255)[..., None]
    if net not in ("seed002", "seed003"):
        raise KeyError(f"no Keras twin of {net!r} (seed002 and seed003 have one)")
    if net == "seed002":
        model = keras.Sequential([
            keras.Input((28, 28, 1)), kl.BatchNormalization(), kl.Conv2D(64, 3, padding="same", activation="relu"),
            kl.BatchNormalization(), kl.Conv2D(64, 3, padding="same", activation="relu"), kl.MaxPooling2D(),
            kl.Dropout(0.25), kl.Conv2D(128, 3, padding="same", activation="relu"), kl.MaxPooling2D(),
            kl.Dropout(0.25), kl.Flatten(), kl.Dense(512, activation="relu"), kl.Dropout(0.5),
            kl.Dense(256, activation="relu"), kl.Dropout(0.5), kl.BatchNormalization(), kl.Dense(10)])
    else:
        model = keras.Sequential([
            keras.Input((28, 28, 1)), kl.BatchNormalization(), kl.Conv2D(64, 4, padding="same", activation="relu"),
            kl.MaxPooling2D(), kl.Dropout(0.1), kl.Conv2D(64, 4, activation="relu"), kl.MaxPooling2D(),
            kl.Dropout(0.3), kl.Flatten(), kl.Dense(256, activation="relu"), kl.Dropout(0.5),
            kl.Dense(64, activation="relu"), kl.BatchNormalization(), kl.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return Workload(lambda: model.fit(x, y, batch_size=FLAGS.batch, epochs=1, verbose=0),
                    lambda: model.predict(x, batch_size=FLAGS.batch, verbose=0), len(y))


def interleaved_rates(workloads: dict[str, Workload], repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (train img/s, eval img/s)}: every workload's training and evaluation timed in
    interleaved rounds (`timing.interleaved_median_seconds`), medians of the rounds."""
    runs = {(name, part): getattr(work, part) for name, work in workloads.items() for part in ("train", "evaluate")}
    seconds = interleaved_median_seconds(runs, repeats)
    return {name: (work.images / seconds[name, "train"], work.images / seconds[name, "evaluate"])
            for name, work in workloads.items()}


def main(argv):
    del argv
    kept = FLAGS.keep_freed_memory and host_memory.keep_freed_memory()
    # XLA's CPU convolution gradients run at a few images/s on the seed 002 net: time fewer steps.
    runners = {"jax-xla": lambda n: time_jax(n, "xla", max(1, FLAGS.steps // 8)),
               "jax-matmul": lambda n: time_jax(n, "matmul", FLAGS.steps),
               "jax-hybrid": lambda n: time_jax(n, "hybrid", FLAGS.steps),
               "jax-winograd": lambda n: time_jax(n, "winograd", FLAGS.steps),
               "torch": time_torch, "keras": time_keras}
    custom = bool(FLAGS.preset or FLAGS.model_args)
    nets = [FLAGS.preset] if FLAGS.preset else FLAGS.nets
    recipe = (f"preset {FLAGS.preset}'s recipe" if FLAGS.preset else "Adam") + \
        (f", model_args {FLAGS.model_args}" if FLAGS.model_args else "")
    print(f"training / evaluation images per second, batch {jax_config(nets[0]).batch}, {recipe}; "
          f"median of {FLAGS.repeats} timings of {FLAGS.steps} steps; malloc "
          f"{'keeps freed memory' if kept else 'defaults'} (all frameworks)")
    peak = roofline.matmul_peak_gflops()
    print(f"float32 matmul peak of this machine (2048 x 2048, XLA): {peak:.0f} GFLOP/s")
    print(f"{'net':<16}{'implementation':<14}{'train img/s':>12}{'eval img/s':>12}{'train vs torch':>16}"
          f"  train {roofline.ROOFLINE_HEADER}")
    for net in nets:
        flops = roofline.training_flops_per_image(jax_config(net))
        workloads = {}
        for name in FLAGS.frameworks:
            if custom and not name.startswith("jax"):
                print(f"{net:<16}{name:<14}  skipped (its twin is the plain net; drop --preset and --model_args)")
                continue
            try:
                workloads[name] = runners[name](net)
            except ImportError as e:
                print(f"{net:<16}{name:<14}  skipped ({e.name} is not installed: pip install -e '.[bench]')")
            except KeyError as e:
                print(f"{net:<16}{name:<14}  skipped ({e.args[0]})")
        results = interleaved_rates(workloads, FLAGS.repeats)
        torch_rate = results.get("torch", (None,))[0]
        for name, (train_rate, eval_rate) in results.items():
            ratio = f"{train_rate / torch_rate:16.2f}" if torch_rate else f"{'':>16}"
            print(f"{net:<16}{name:<14}{train_rate:12.0f}{eval_rate:12.0f}{ratio}       "
                  f"{roofline.roofline_columns(flops, train_rate, peak)}", flush=True)


if __name__ == "__main__":
    app.run(main)
