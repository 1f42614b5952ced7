"""k-NN on Fashion-MNIST: one k, or a sweep of k on the test set or a validation split.

  python -m experiments.knn --k=5 --metric=l1
  python -m experiments.knn --k=1,3,5,9,50 --metric=l2 --train_limit=10000 --val_fraction=0.2

Every flag but the folders is a field of fmnist_jax.knn.run.KnnConfig. Writes
results/<run>/config.json and summary.json (accuracy per k, seconds, device, versions).
"""

from __future__ import annotations

import sys

from experiments import cli
from fmnist_jax.knn.run import KnnConfig, run_knn


def define_flags(fv) -> None:
    cli.define_config_flags(fv, KnnConfig)
    cli.define_run_flags(fv, checkpoints=False, overwrite=False)


def main(fv, args) -> dict:
    cfg = KnnConfig(**cli.config_values(fv, KnnConfig))
    cfg.validate()
    paths = cli.run_paths(fv, f"knn_{cfg.metric}_{cfg.weights}_k{'-'.join(map(str, cfg.k))}")
    summary = run_knn(cfg, paths, data_dir=fv.data_dir)
    for k, acc in summary["accuracy"].items():
        print(f"k={k:<3s} {cfg.metric} {cfg.weights:<8s} {summary['evaluated_on']} accuracy {acc:.4f}")
    print(f"{summary['n_eval']} queries x {summary['n_train']} training images in {summary['seconds']:.1f} s "
          f"on {summary['environment']['backend']}; results in {paths.results}")
    return summary


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
