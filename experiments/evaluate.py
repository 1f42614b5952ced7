"""Evaluate a trained run on the test set: accuracy/loss, confusion matrix, misclassified images,
per-class precision/recall/F1 — of the ensemble of its members, or of one member.

  python -m experiments.evaluate --run=seed002_s0 [--which=best|latest] [--tta] [--member=I]

Reads results/<run>/config.json and checkpoints/<run>/; writes results/<run>/eval_<which>[_memberI][_tta]/
(metrics.json, classification_report.json, confusion_matrix.png, misclassified.png). For a run of
several members the report is of their soft vote (mean softmax) unless --member picks one, and
metrics.json also lists every member's accuracy with their mean ± std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import app, flags

from experiments import common, training
from fmnist_jax import checkpoint, data, ensemble, report, train

FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "Run name (a folder of results/ and checkpoints/).")
flags.DEFINE_enum("which", "best", ["best", "latest"],
                  "Each member's best-validation variables, or the latest epoch's.")
flags.DEFINE_bool("tta", False, "Average the prediction with the horizontally flipped image's.")
flags.DEFINE_integer("member", None, "Report on this member alone (0-based) instead of the ensemble.")


def evaluate_run(run: str, which: str = "best", tta: bool = False, member: int | None = None, *,
                 data_dir=None, checkpoint_dir: str = "checkpoints", results_dir: str = "results") -> dict:
    """Evaluates one checkpoint of `run` on the test set and writes the report files."""
    cfg, members, saved = training.load_record(results_dir, run)
    if member is not None and not 0 <= member < len(members):
        raise common.UsageError(f"--member must be in 0..{len(members) - 1} for run {run!r}, got {member}.")
    ckpt_path = Path(checkpoint_dir) / run
    if not ckpt_path.exists():
        raise common.UsageError(f"run {run!r} has no checkpoints in {ckpt_path}.")
    ds = data.load(saved.get("dataset", "fashion_mnist"), data_dir)
    t = training.build_trainer(cfg, members, ds, saved.get("split_per_seed", False))
    ckpts = checkpoint.RunCheckpoints(ckpt_path)
    epoch = ckpts.latest_epoch()
    if epoch is None:
        raise common.UsageError(f"run {run!r} has no checkpoint in {ckpt_path}.")
    state = ckpts.restore(epoch, t.abstract_state())
    ckpts.close()
    variables = state.best if which == "best" else train.variables_of(state.train)
    x_test = t.replicate(ds.x_test)
    logits = t.predict(variables, x_test)
    probs = ensemble.member_probabilities(logits, t.predict(variables, x_test, flip=True) if tta else None)
    y_test = ds.y_test.astype(np.int64)
    scores = ensemble.score(probs, y_test)
    chosen = probs.mean(0) if member is None else probs[member]
    y_pred = chosen.argmax(-1)
    loss = float(ensemble.nll(chosen, y_test))
    names = data.CLASS_NAMES[saved.get("dataset", "fashion_mnist")]
    rep = report.classification_report(y_test, y_pred, names)
    cm = report.confusion_matrix(y_test, y_pred)
    suffix = ("" if member is None else f"_member{member}") + ("_tta" if tta else "")
    out = Path(results_dir) / run / f"eval_{which}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    epochs = np.asarray(state.best_epoch).tolist() if which == "best" else [epoch] * len(members)
    subject = "ensemble" if member is None else f"member {member}"
    metrics = {"run": run, "which": which, "member": member, "epochs": epochs, "tta": tta,
               "test_accuracy": rep["accuracy"], "test_loss": loss, "n_test": int(len(y_test)),
               "members": scores, "confusion_matrix": cm.tolist()}
    common.write_json(out / "metrics.json", metrics)
    common.write_json(out / "classification_report.json", rep)
    report.plot_confusion(cm, names, out / "confusion_matrix.png", f"{run} ({which}, {subject})")
    report.plot_misclassified(ds.x_test, y_test, y_pred, names, out / "misclassified.png")
    label = f"{which} checkpoint{'s' if len(members) > 1 else ''} (epoch{'s' if len(members) > 1 else ''} " \
            f"{', '.join(map(str, epochs))})"
    print(f"{run} {label}{' with flip TTA' if tta else ''}, {subject if len(members) > 1 else 'model'}: "
          f"test accuracy {rep['accuracy']:.4f}, loss {loss:.4f}")
    if len(members) > 1:
        print(f"members: {', '.join(f'{a:.4f}' for a in scores['member_accuracy'])} -> "
              f"{scores['mean_accuracy']:.4f} ± {scores['std_accuracy']:.4f}; ensemble {scores['ensemble_accuracy']:.4f}")
    print(report.format_report(rep))
    print(f"files in {out}")
    return metrics


def main(argv):
    del argv
    common.setup_logging()
    try:
        if not FLAGS.run:
            raise common.UsageError("--run is required (a run name under results/).")
        evaluate_run(FLAGS.run, FLAGS.which, FLAGS.tta, FLAGS.member, data_dir=FLAGS.data_dir,
                     checkpoint_dir=FLAGS.checkpoint_dir, results_dir=FLAGS.results_dir)
    except (common.UsageError, data.DataError, checkpoint.CheckpointError) as e:
        common.fail(str(e))


if __name__ == "__main__":
    app.run(main)
