"""Helpers shared by the experiment entry points: run folders, environment facts, user errors."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
from pathlib import Path

from absl import flags
from absl import logging as absl_logging

log = logging.getLogger("experiments")

# Flags every experiment shares, defined once (absl refuses a second definition in one process).
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist or mnist.")
flags.DEFINE_string("data_dir", None, "Folder of the IDX files (default: $FMNIST_DATA_DIR, ./data/<dataset>, "
                    "then Debian's /usr/share/datasets/fashion-mnist).")
flags.DEFINE_integer("seed", 0, "Root seed (of the split, and for training of init, shuffling, "
                     "augmentation and dropout).")
flags.DEFINE_integer("train_limit", 0, "Use only the first N training images (0: all).")
flags.DEFINE_float("val_fraction", None, "Share of the training set held out for validation "
                   "(default: 0 for k-NN, i.e. score on the test set; 0.15 for CNNs, as seed 002).")
flags.DEFINE_string("run_name", None, "Run folder name (default: derived from the flags).")
flags.DEFINE_string("results_dir", "results", "Where results/<run>/ is written.")
flags.DEFINE_string("checkpoint_dir", "checkpoints", "Where checkpoints/<run>/ is kept.")


class UsageError(Exception):
    """A bad flag or input: reported as one sentence and a non-zero exit, without a traceback."""


def fail(message: str) -> None:
    """Prints `message` to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def setup_logging() -> None:
    """Library logging (module loggers) shows through absl at INFO level."""
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("jax._src.xla_bridge", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def environment() -> dict:
    """Devices and package versions, recorded with every result."""
    import jax
    import numpy as np
    info = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
    }
    for name in ("flax", "optax", "orbax.checkpoint"):
        try:
            module = __import__(name, fromlist=["__version__"])
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            pass
    return info


def run_dir(results_dir: str, run_name: str) -> Path:
    """Creates results/<run_name>/ and returns it."""
    path = Path(results_dir) / run_name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the results folder {path} ({e.strerror}).") from e
    return path


def write_json(path: Path, payload: dict) -> None:
    """Writes JSON atomically: a crash never leaves a half-written file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path} ({e.strerror}).") from e


def parse_int_list(text: str, flag: str) -> list[int]:
    """'1,3,5' -> [1, 3, 5], with a clear error for anything else."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{flag} must be an integer or a comma list of integers, got {text!r}.")
    if not values:
        raise UsageError(f"--{flag} is empty.")
    return values
