"""A run on disk: its folders, its config record, its metrics history, atomic JSON.

A run named NAME lives in two folders: results/NAME/ (config.json, metrics.jsonl, summary.json,
plots, evaluation reports) and checkpoints/NAME/ (the Orbax checkpoints of its `RunState`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fmnist_jax import config
from fmnist_jax.errors import ConfigError, RunError

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_run_name(name: str, field: str = "run_name") -> str:
    """`name` if it is a plain folder name (letters, digits, - _ .; not . or ..), else ConfigError
    naming `field`."""
    if not name or not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(field, f"must be a plain folder name (letters, digits, '-', '_', '.'), "
                                 f"got {name!r}.")
    return name


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where run `name` keeps its results and its checkpoints."""
    name: str
    results_dir: str | os.PathLike = "results"
    checkpoint_dir: str | os.PathLike = "checkpoints"

    def __post_init__(self):
        for part in self.name.split("/"):
            check_run_name(part)

    @property
    def results(self) -> Path:
        return Path(self.results_dir) / self.name

    @property
    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) / self.name

    def child(self, part: str) -> "RunPaths":
        """A run nested in this one (a sweep's shape group): results/NAME/PART/, checkpoints/NAME/PART/."""
        return dataclasses.replace(self, name=f"{self.name}/{check_run_name(part)}")

    def make_results(self) -> Path:
        """Creates results/NAME/ and returns it."""
        try:
            self.results.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create the results folder {self.results} ({e.strerror}).") from e
        return self.results


def write_text(path: Path, text: str) -> None:
    """Writes a text file atomically (a temporary name, then a rename): never half written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path} ({e.strerror}).") from e


def write_json(path: Path, payload: Any) -> None:
    """Writes JSON atomically: a crash never leaves a half-written file behind."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


# In results/<run>/: each member's test-set probabilities of its best-validation variables,
# plain and with the run's TTA (the summary writes it): what a vote of separately trained runs
# needs (`records.runs_ensemble`).
PROBABILITIES_FILE = "test_probabilities.npz"


def write_npz(path: Path, **arrays) -> None:
    """np.savez atomically (a temporary name, then a rename): never half written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path} ({e.strerror}).") from e


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
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "cpu_vector": _cpu_vector_extension(),
        "cpu_family_model": _cpu_family_model(),
    }
    for name in ("flax", "optax", "orbax.checkpoint"):
        try:
            module = __import__(name, fromlist=["__version__"])
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            pass
    return info


def _cpuinfo_field(name: str) -> str | None:
    """The first `name` line's value in /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    """The processor's name (Linux: /proc/cpuinfo; elsewhere platform.processor())."""
    return _cpuinfo_field("model name") or platform.processor() or "?"


def _cpu_vector_extension() -> str:
    """The widest x86 vector extension the processor has ("AVX-512", "AVX2", or "" when neither or
    not Linux). "AMD EPYC" names Zen 3 (AVX2) and Zen 5 (AVX-512) alike, and the two train the
    same net at speeds 2x apart, so the minutes a record quotes need it."""
    flags = (_cpuinfo_field("flags") or "").split()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""


def _cpu_family_model() -> str:
    """The x86 "family/model" pair ("25/17": a Zen 4; "" when unknown). The name and the vector width
    do not tell a Zen 4 from a Zen 5 (both "AMD EPYC" with AVX-512), and XLA tunes its code for the
    exact core, so two of them round the same program differently: bit-for-bit comparisons need it."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model\t")
    return f"{family}/{model}" if family and model else ""


def process_seconds(started_at: float | None = None) -> float | None:
    """Wall-clock seconds since this process started (Linux: from /proc, so interpreter start-up
    and imports count; elsewhere since `started_at`, a time.time() the caller took at its start,
    or None without one). Time-to-accuracy figures are measured from the command's start."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None if started_at is None else time.time() - started_at


def config_record(cfg: config.TrainConfig, members: Sequence) -> dict:
    """What config.json holds: the config and the members, enough to rebuild the run."""
    return config.as_record(cfg) | {"members": [m.as_dict() for m in members]}


def read_record(paths: RunPaths) -> dict:
    """The run's config.json, or RunError when there is no such run."""
    path = paths.results / "config.json"
    if not path.exists():
        raise RunError(f"no run {paths.name!r}: {path} does not exist (train it with experiments.cnn).")
    return json.loads(path.read_text())


def check_resumable(saved: dict, record: dict, run: str) -> None:
    """RunError unless `record` differs from the saved one only in fields a resumed run may change.

    A field the saved record lacks (a run from before the field existed) counts as its default,
    which is what that run trained with.
    """
    saved = saved | config.as_record(config.from_record(saved))
    changed = sorted(k for k in record if saved.get(k) != record[k] and k not in config.RESUMABLE_FIELDS)
    if changed:
        raise RunError(f"run {run!r} already exists with a different {', '.join(changed)}; pass another "
                       "run_name, or overwrite to start it again.")


def read_history(path: Path, up_to_epoch: int) -> list[dict]:
    """The metrics.jsonl rows of epochs 1..up_to_epoch (rows of later epochs, and a line torn by
    a process killed while appending it, are dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in rows if r["epoch"] <= up_to_epoch]
