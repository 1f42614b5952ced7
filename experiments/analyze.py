"""Look inside a trained run: t-SNE of its features and of the pixels, feature maps of every
convolution and pooling layer, first-layer filters, calibration, per-class accuracy.

  python -m experiments.analyze --run=cnn_demo [--which=best|latest] [--member=I]
  python -m experiments.analyze --run=cnn_demo --tsne_points=0      # t-SNE of all 10,000 test images

Writes results/<run>/analysis_<which>[_member<i>]/: tsne_features.png, tsne_pixels.png,
feature_maps/NN_<layer>.png, first_layer_filters.png, reliability.png, confidence_histogram.png,
per_class_accuracy.png, and analysis.json, calibration.json, tsne.npz, feature_maps.npz. For a
run of several members the predictions are the soft vote unless --member picks one. t-SNE needs
scikit-learn (pip install -e '.[analysis]').
"""

from __future__ import annotations

import sys

from absl import flags

from experiments import cli
from fmnist_jax.analysis import run_analysis


def define_flags(fv) -> None:
    cli.define_trained_run_flags(fv)
    flags.DEFINE_integer("member", None, "Analyse this member alone (0-based) instead of the ensemble's soft "
                         "vote; features and feature maps are of this member (default: member 0).", flag_values=fv)
    flags.DEFINE_integer("tsne_points", 2000, "Test images in the t-SNE plots, a seeded sample (0: all).",
                         flag_values=fv)
    flags.DEFINE_integer("tsne_iter", 1000, "t-SNE iterations (at least 250; fewer is quicker and rougher).",
                         flag_values=fv)
    flags.DEFINE_integer("feature_images", 4, "Test images whose feature maps are drawn (one per class first).",
                         flag_values=fv)


def main(fv, args) -> dict:
    paths = cli.trained_run_paths(fv)
    summary = run_analysis.analyze_run(paths, fv.which, fv.member, data_dir=fv.data_dir,
                                       tsne_points=fv.tsne_points, feature_images=fv.feature_images,
                                       tsne_iter=fv.tsne_iter)
    print(run_analysis.describe(summary))
    return summary


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
