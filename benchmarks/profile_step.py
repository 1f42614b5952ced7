"""Where one training step's time goes: XLA CPU's per-operation times from a jax.profiler trace.

  python -m benchmarks.profile_step --net=seed002 --conv_impl=hybrid --top=25

Traces --steps single training steps (after a warm-up) and prints each compiled operation's mean
time per step, largest first, with the HLO name and the source operation it came from (e.g.
`Conv_1/concatenate`). Operations run one after another on this backend, except plain `dot`
thunks, which return before their work is done: their time shows up in the next operation, so
read the sum against the step's wall time, not as a partition of it.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile

# Per-operation trace events on CPU; must be set before jax is imported.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.timing import median_seconds  # noqa: E402
from fmnist_jax.config import TrainConfig
from fmnist_jax.models import layers  # noqa: E402
from fmnist_jax.runs import host_memory  # noqa: E402
from fmnist_jax.training import step

FLAGS = flags.FLAGS
flags.DEFINE_string("net", "seed002", "Model to profile.")
flags.DEFINE_enum("conv_impl", "auto", list(layers.CONV_IMPLS), "Convolution implementation.")
flags.DEFINE_integer("batch", 250, "Batch size.")
flags.DEFINE_integer("steps", 3, "Traced steps (times are per step).")
flags.DEFINE_integer("top", 25, "Operations to list.")
flags.DEFINE_bool("keep_freed_memory", True, "As the experiment scripts (fmnist_jax.runs.host_memory).")

_RUNTIME_EVENTS = ("ThunkExecutor", "PjRt", "Pjit", "Execute", "Allocate", "Handle", "Await", "Wait",
                   "Threadpool", "Collect", "Parse", "DevicePut", "end:", "$", "Slinky", "CommonPjRt")


def op_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the source operation in its metadata (e.g. 'Conv_1/concatenate')."""
    sources = {}
    for match in re.finditer(r"%([\w.\-]+) = .*?op_name=\"([^\"]+)\"", hlo_text):
        sources[match.group(1)] = "/".join(match.group(2).split("/")[-2:])
    return sources


def main(argv):
    del argv
    if FLAGS.keep_freed_memory:
        host_memory.keep_freed_memory()
    cfg = TrainConfig(model=FLAGS.net, batch=FLAGS.batch, conv_impl=FLAGS.conv_impl)
    model = step.build_model(cfg)
    hparams = step.HParams.create(cfg)
    state = step.init_state(model, step.make_optimizer(cfg, 100, hparams), jax.random.key(0), hparams)
    train_step = jax.jit(step.make_train_step(model, cfg, 100))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (FLAGS.batch, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, FLAGS.batch).astype(np.int32)
    key = jax.random.key(1)
    # One compilation: the HLO names the trace reports are those of this executable.
    compiled = train_step.lower(state, x, y, key).compile()
    sources = op_sources(compiled.as_text())
    wall = median_seconds(lambda: jax.block_until_ready(compiled(state, x, y, key)), FLAGS.steps)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(FLAGS.steps):
            jax.block_until_ready(compiled(state, x, y, key))
        jax.profiler.stop_trace()
        trace_file = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
        with gzip.open(trace_file) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(_RUNTIME_EVENTS):
            per_op[event["name"]] += event["dur"] / 1000 / FLAGS.steps
    print(f"{FLAGS.net}, conv {layers.resolve_conv_impl(FLAGS.conv_impl)}, batch {FLAGS.batch}: one step "
          f"{wall * 1000:.0f} ms wall (median), traced operations {sum(per_op.values()):.0f} ms")
    print(f"{'ms/step':>8}  {'operation':<36}source")
    for name, ms in per_op.most_common(FLAGS.top):
        print(f"{ms:8.1f}  {name:<36}{sources.get(name, '')}")


if __name__ == "__main__":
    app.run(main)
