"""Choose test-time views on validation: every set of views scored on a trained run's validation split.

  python -m experiments.tta_views --run=speedrun_s0 [--which=best|latest]

Prints, for each set of fmnist_jax.evaluation.tta (none, flip, flip_shift, flip_cross, flip_ring,
flip_diag2), the validation accuracy of the mean softmax over its views (members' mean and their
vote), and writes results/<run>/tta_views_<which>.json. The test set is never read: train with
--tta=<the best set> (or evaluate with --tta_views) once it is chosen here.
"""

from __future__ import annotations

import sys

from experiments import cli
from fmnist_jax.evaluation import view_selection
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import write_json


def define_flags(fv) -> None:
    cli.define_trained_run_flags(fv)


def main(fv, args) -> list[dict]:
    paths = cli.trained_run_paths(fv)
    restored = restore.restore_run(paths, fv.which)
    x_val, y_val = view_selection.validation_split(restored, fv.data_dir)
    rows = view_selection.score_view_sets(restored, x_val, y_val)
    print(f"{paths.name} ({fv.which}, epochs {restored.epochs}): {len(y_val)} validation images")
    print(view_selection.format_rows(rows))
    write_json(paths.results / f"tta_views_{fv.which}.json", {"run": paths.name, "which": fv.which,
                                                              "validation_images": len(y_val), "views": rows})
    return rows


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
