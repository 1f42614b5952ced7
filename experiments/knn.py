"""k-NN on Fashion-MNIST: one k, or a sweep of k on the test set or a validation split.

  python -m experiments.knn --k=5 --metric=l1
  python -m experiments.knn --k=1,3,5,9,50 --metric=l2 --train_limit=10000 --val_fraction=0.2

Writes results/<run>/config.json and summary.json (accuracy per k, seconds, device, versions).
"""

from __future__ import annotations

import time

from absl import app, flags

from experiments import common
from fmnist_jax import data, knn

FLAGS = flags.FLAGS
flags.DEFINE_string("k", "5", "Neighbours: one integer, or a comma list for a sweep (e.g. 1,3,5,9,50).")
flags.DEFINE_enum("metric", "l2", list(knn.METRICS), "Distance: l1 (Manhattan) or l2 (Euclidean).")
flags.DEFINE_enum("weights", "uniform", list(knn.WEIGHTS), "Vote weights, as scikit-learn.")
flags.DEFINE_enum("source", "auto", list(data.SOURCES), "Where the data comes from.")
flags.DEFINE_integer("test_limit", 0, "Use only the first N test (or validation) images (0: all).")
flags.DEFINE_integer("memory_mb", 1024, "Device memory budget for one chunk of queries, in MiB.")


def config_from_flags() -> dict:
    """Validated experiment configuration from the flags."""
    ks = common.parse_int_list(FLAGS.k, "k")
    if min(ks) < 1:
        raise common.UsageError(f"--k must be at least 1, got {min(ks)}.")
    for name in ("train_limit", "test_limit"):
        if getattr(FLAGS, name) < 0:
            raise common.UsageError(f"--{name} must be 0 (all) or positive.")
    val_fraction = FLAGS.val_fraction or 0.0
    if not 0.0 <= val_fraction < 1.0:
        raise common.UsageError(f"--val_fraction must be in [0, 1), got {val_fraction}.")
    if FLAGS.memory_mb < 1:
        raise common.UsageError("--memory_mb must be positive.")
    name = FLAGS.run_name or f"knn_{FLAGS.metric}_{FLAGS.weights}_k{'-'.join(map(str, ks))}"
    return dict(ks=ks, metric=FLAGS.metric, weights=FLAGS.weights, dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, source=FLAGS.source, train_limit=FLAGS.train_limit,
                test_limit=FLAGS.test_limit, val_fraction=val_fraction, seed=FLAGS.seed,
                memory_mb=FLAGS.memory_mb, results_dir=FLAGS.results_dir, run_name=name)


def split_data(cfg: dict, ds: data.Dataset):
    """(x_train, y_train, x_eval, y_eval, eval_name) as the config asks."""
    x_train, y_train = ds.x_train, ds.y_train
    if cfg["train_limit"]:
        x_train, y_train = x_train[:cfg["train_limit"]], y_train[:cfg["train_limit"]]
    if cfg["val_fraction"] > 0:
        tr, va = data.train_val_split(y_train, cfg["val_fraction"], cfg["seed"])
        x_train, y_train, x_eval, y_eval, name = x_train[tr], y_train[tr], x_train[va], y_train[va], "validation"
    else:
        x_eval, y_eval, name = ds.x_test, ds.y_test, "test"
    if cfg["test_limit"]:
        x_eval, y_eval = x_eval[:cfg["test_limit"]], y_eval[:cfg["test_limit"]]
    return x_train, y_train, x_eval, y_eval, name


def run(cfg: dict) -> dict:
    """Runs the experiment described by `cfg`, writes its files, returns the summary."""
    ds = data.load(cfg["dataset"], cfg["data_dir"], cfg["source"])
    x_train, y_train, x_eval, y_eval, eval_name = split_data(cfg, ds)
    if max(cfg["ks"]) > len(x_train):
        raise common.UsageError(f"--k={max(cfg['ks'])} is larger than the training set "
                                f"({len(x_train)} images).")
    out = common.run_dir(cfg["results_dir"], cfg["run_name"])
    common.write_json(out / "config.json", cfg)
    last_report = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_report[0] > 5 or done == total:
            last_report[0] = now
            common.log.info("k-NN %s: %d/%d queries (%.0f%%)", cfg["metric"], done, total, 100 * done / total)

    start = time.perf_counter()
    accuracy = knn.sweep(x_train, y_train, x_eval, y_eval, cfg["ks"], cfg["metric"], cfg["weights"],
                         memory_budget=cfg["memory_mb"] << 20, progress=progress)
    seconds = time.perf_counter() - start
    summary = {
        "accuracy": {str(k): acc for k, acc in accuracy.items()},
        "best_k": int(max(accuracy, key=lambda k: (accuracy[k], -k))),
        "evaluated_on": eval_name,
        "n_train": int(len(x_train)),
        "n_eval": int(len(x_eval)),
        "seconds": seconds,
        "environment": common.environment(),
    }
    common.write_json(out / "summary.json", summary)
    for k, acc in accuracy.items():
        print(f"k={k:<3d} {cfg['metric']} {cfg['weights']:<8s} {eval_name} accuracy {acc:.4f}")
    print(f"{len(x_eval)} queries x {len(x_train)} training images in {seconds:.1f} s "
          f"on {summary['environment']['backend']}; results in {out}")
    return summary


def main(argv):
    del argv
    common.setup_logging()
    try:
        run(config_from_flags())
    except (common.UsageError, data.DataError) as e:
        common.fail(str(e))


if __name__ == "__main__":
    app.run(main)
