"""Test-time views chosen on validation: every set of `tta.VIEWS` scored on a trained run's
validation split, never on the test set.

    restored = restore.restore_run(paths)
    rows = view_selection.score_view_sets(restored, *view_selection.validation_split(restored))

Each distinct view is predicted once (one program for all of them); a set's prediction is the
equal-weight mean of its views' softmax, as in the test report (`summary.test_probabilities`).
"""

from __future__ import annotations

import numpy as np

from fmnist_jax.errors import RunError
from fmnist_jax.evaluation import ensemble, tta
from fmnist_jax.runs.restore import RestoredRun
from fmnist_jax.training import train


def validation_split(restored: RestoredRun, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of the run's validation split (shared by its members), rebuilt from the run's config as
    training built it (the same pool of originals and fixed copies, the same split)."""
    if restored.cfg.split_per_seed:
        raise RunError(f"run {restored.paths.name!r} gave each member its own validation split "
                         "(split_per_seed), so no one split is held out from every member.")
    setup, _ = train.place(restored.cfg, restored.members, data_dir)
    if setup.n_val == 0:
        raise RunError(f"run {restored.paths.name!r} holds out no validation split (val_fraction=0): "
                         "views cannot be chosen on it.")
    idx = setup.val_idx[0]
    return np.asarray(setup.x)[idx], np.asarray(setup.y)[idx]


def score_view_sets(restored: RestoredRun, x_val, y_val, names=tuple(tta.VIEWS)) -> list[dict]:
    """[{"views", "n_views", "accuracy" (mean over members), "member_accuracy", "ensemble_accuracy"}]
    for every set in `names`, on (x_val, y_val), in the order of `names`."""
    distinct = list(dict.fromkeys(view for name in names for view in tta.VIEWS[tta.check(name)]))
    logits = restored.predict()(restored.variables, restored.replicate(x_val), views=distinct)
    by_view = dict(zip(distinct, logits))
    rows = []
    for name in names:
        views = tta.VIEWS[name]
        probs = ensemble.mean_probabilities([by_view[v] for v in views])     # [M, N, C]
        scores = ensemble.score(probs, np.asarray(y_val))
        rows.append({"views": name, "n_views": len(views), "accuracy": scores["mean_accuracy"],
                     "member_accuracy": scores["member_accuracy"], "ensemble_accuracy": scores["ensemble_accuracy"]})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a small table, best validation accuracy marked."""
    best = max(r["accuracy"] for r in rows)
    lines = [f"{'views':<12}{'count':>7}{'val accuracy':>14}{'ensemble':>10}"]
    for r in rows:
        mark = "  <- best" if r["accuracy"] == best else ""
        lines.append(f"{r['views']:<12}{r['n_views']:>7}{100 * r['accuracy']:13.2f}%{100 * r['ensemble_accuracy']:9.2f}%{mark}")
    return "\n".join(lines)
