"""Evaluate a trained run on the test set: accuracy/loss, confusion matrix, misclassified images,
per-class precision/recall/F1, of the ensemble of its members or of one member.

  python -m experiments.evaluate --run=seed002_s0 [--which=best|latest] [--tta] [--member=I]
  python -m experiments.evaluate --run=speedrun_s0 --tta_views=flip_shift

--tta averages each prediction with the mirror image's (as it always has); --tta_views=NAME picks
another set of views (fmnist_jax.evaluation.tta: none, flip, flip_shift, ...) and needs no --tta;
`experiments.tta_views` compares the sets on the run's validation split.
Reads results/<run>/config.json and checkpoints/<run>/; writes results/<run>/eval_<which>
[_member<i>][_tta[_<views>]]/ (metrics.json, classification_report.json, confusion_matrix.png,
misclassified.png). For a run of several members the report is of their soft vote (mean
softmax) unless --member picks one, and metrics.json lists every member's accuracy too.
"""

from __future__ import annotations

import sys

from absl import flags

from experiments import cli
from fmnist_jax.config import TrainConfig
from fmnist_jax.evaluation import run_report, tta


def define_flags(fv) -> None:
    cli.define_trained_run_flags(fv)
    flags.DEFINE_bool("tta", False, "Average the prediction with the horizontally flipped image's "
                      "(the same as --tta_views=flip).", flag_values=fv)
    flags.DEFINE_enum("tta_views", None, list(tta.VIEWS), "Test-time augmentation: average the softmax "
                      "over these views of each image (none; flip: the mirror image; flip_shift: "
                      "mirror and ±1-pixel shifts; fmnist_jax.evaluation.tta has the others). "
                      "Default: flip with --tta, else none.", flag_values=fv)
    flags.DEFINE_integer("member", None, "Report on this member alone (0-based) instead of the ensemble.",
                         flag_values=fv)
    cli.define_config_flags(fv, TrainConfig, only=("conv_impl", "eval_batch"),
                            defaults={"conv_impl": None, "eval_batch": None})


def main(fv, args) -> dict:
    paths = cli.trained_run_paths(fv)
    views = fv.tta_views if fv.tta_views is not None else run_report.tta_views(fv.tta)
    metrics = run_report.evaluate_run(paths, fv.which, views, fv.member, data_dir=fv.data_dir,
                                      conv_impl=fv.conv_impl, eval_batch=fv.eval_batch)
    print(run_report.describe(metrics))
    return metrics


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
