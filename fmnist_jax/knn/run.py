"""A k-NN experiment as a flag-free library call: `KnnConfig` and `run_knn`.

    result = run_knn(KnnConfig(k=(1, 3, 5), metric="l1", val_fraction=0.2), RunPaths("knn_sweep"))

scores one k, or a sweep of k, on the test set (val_fraction 0, the earlier projects' protocol)
or on a validation split held out of the training images, and writes config.json and
summary.json under results/<run>/.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from fmnist_jax.config import as_record
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError
from fmnist_jax.knn import exact
from fmnist_jax.runs.files import RunPaths, environment, write_json

log = logging.getLogger(__name__)


def _field(default, help: str, choices: tuple | None = None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class KnnConfig:
    """Everything that defines a k-NN experiment (recorded in its config.json)."""
    k: tuple[int, ...] = _field((5,), "Neighbours: one integer, or a comma list for a sweep (e.g. 1,3,5,9,50).")
    metric: str = _field("l2", "Distance: l1 (Manhattan) or l2 (Euclidean).", exact.METRICS)
    weights: str = _field("uniform", "Vote weights, as scikit-learn's.", exact.WEIGHTS)
    dataset: str = _field("fashion_mnist", "Dataset.", datasets.DATASETS)
    source: str = _field("auto", "Where the data comes from (auto: IDX files, else TFDS).", datasets.SOURCES)
    train_limit: int = _field(0, "Use only the first N training images (0: all).")
    test_limit: int = _field(0, "Use only the first N test (or validation) images (0: all).")
    val_fraction: float = _field(0.0, "Share of the training images held out to score on instead of "
                                 "the test set (0: score on the test set).")
    seed: int = _field(0, "Random seed of the validation split.")
    memory_mb: int = _field(1024, "Device memory budget for one chunk of queries, in MiB.")

    def validate(self) -> None:
        """Raises ConfigError naming the first field with an impossible value."""
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            if choices is not None and getattr(self, f.name) not in choices:
                raise ConfigError(f.name, f"does not know {getattr(self, f.name)!r}; choose from {', '.join(choices)}.")
        if not self.k:
            raise ConfigError("k", "is empty.")
        if min(self.k) < 1:
            raise ConfigError("k", f"must be at least 1, got {min(self.k)}.")
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be 0 (all) or positive, got {getattr(self, name)}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in [0, 1), got {self.val_fraction}.")
        if self.memory_mb < 1:
            raise ConfigError("memory_mb", f"must be positive, got {self.memory_mb}.")


def split_data(cfg: KnnConfig, ds: datasets.Dataset):
    """(x_train, y_train, x_eval, y_eval, eval_name) as the config asks."""
    x_train, y_train = ds.x_train, ds.y_train
    if cfg.train_limit:
        x_train, y_train = x_train[:cfg.train_limit], y_train[:cfg.train_limit]
    if cfg.val_fraction > 0:
        tr, va = datasets.train_val_split(y_train, cfg.val_fraction, cfg.seed)
        x_train, y_train, x_eval, y_eval, name = x_train[tr], y_train[tr], x_train[va], y_train[va], "validation"
    else:
        x_eval, y_eval, name = ds.x_test, ds.y_test, "test"
    if cfg.test_limit:
        x_eval, y_eval = x_eval[:cfg.test_limit], y_eval[:cfg.test_limit]
    return x_train, y_train, x_eval, y_eval, name


def run_knn(cfg: KnnConfig, paths: RunPaths, *, data_dir=None) -> dict:
    """Runs the k-NN experiment, writes config.json and summary.json, returns the summary."""
    cfg.validate()
    ds = datasets.load(cfg.dataset, data_dir, cfg.source)
    x_train, y_train, x_eval, y_eval, eval_name = split_data(cfg, ds)
    if max(cfg.k) > len(x_train):
        raise ConfigError("k", f"={max(cfg.k)} is larger than the training set ({len(x_train)} images).")
    out = paths.make_results()
    write_json(out / "config.json", as_record(cfg) | {"run_name": paths.name})
    start = time.perf_counter()
    last_report = [start]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_report[0] > 5 or done == total:
            last_report[0] = now
            left = (total - done) * (now - start) / max(done, 1)
            log.info("k-NN %s: %d/%d queries (%.0f%%), %.0f s left", cfg.metric, done, total, 100 * done / total, left)

    accuracy = exact.sweep(x_train, y_train, x_eval, y_eval, list(cfg.k), cfg.metric, cfg.weights,
                         memory_budget=cfg.memory_mb << 20, progress=progress)
    seconds = time.perf_counter() - start
    summary = {
        "accuracy": {str(k): acc for k, acc in accuracy.items()},
        "best_k": int(max(accuracy, key=lambda k: (accuracy[k], -k))),
        "evaluated_on": eval_name,
        "n_train": int(len(x_train)),
        "n_eval": int(len(x_eval)),
        "seconds": seconds,
        "environment": environment(),
    }
    write_json(out / "summary.json", summary)
    return summary
