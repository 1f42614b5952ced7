"""Evaluate a trained run on the test set: accuracy/loss, confusion matrix, misclassified images,
per-class precision/recall/F1, of the ensemble of its members or of one member.

  python -m experiments.evaluate --run=seed002_s0 [--which=best|latest] [--tta] [--member=I]

Reads results/<run>/config.json and checkpoints/<run>/; writes results/<run>/eval_<which>
[_member<i>][_tta]/ (metrics.json, classification_report.json, confusion_matrix.png,
misclassified.png). For a run of several members the report is of their soft vote (mean
softmax) unless --member picks one, and metrics.json lists every member's accuracy too.
"""

from __future__ import annotations

import sys

from absl import flags

from experiments import cli
from fmnist_jax import evaluation
from fmnist_jax.config import TrainConfig


def define_flags(fv) -> None:
    cli.define_trained_run_flags(fv)
    flags.DEFINE_bool("tta", False, "Average the prediction with the horizontally flipped image's.", flag_values=fv)
    flags.DEFINE_integer("member", None, "Report on this member alone (0-based) instead of the ensemble.",
                         flag_values=fv)
    cli.define_config_flags(fv, TrainConfig, only=("conv_impl", "eval_batch"),
                            defaults={"conv_impl": None, "eval_batch": None})


def main(fv, args) -> dict:
    paths = cli.trained_run_paths(fv)
    metrics = evaluation.evaluate_run(paths, fv.which, fv.tta, fv.member, data_dir=fv.data_dir,
                                      conv_impl=fv.conv_impl, eval_batch=fv.eval_batch)
    print(evaluation.describe(metrics))
    return metrics


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
