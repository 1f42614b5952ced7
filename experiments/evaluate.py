"""Evaluate a trained run on the test set: accuracy/loss, confusion matrix, misclassified images,
per-class precision/recall/F1.

  python -m experiments.evaluate --run=seed002_s0 [--which=best|latest] [--tta]

Reads results/<run>/config.json and checkpoints/<run>/; writes results/<run>/eval_<which>[_tta]/
(metrics.json, classification_report.json, confusion_matrix.png, misclassified.png).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from experiments import common
from fmnist_jax import checkpoint, data, report, train

FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "Run name (a folder of results/ and checkpoints/).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint: best validation accuracy or the latest epoch.")
flags.DEFINE_bool("tta", False, "Average the prediction with the horizontally flipped image's.")


def load_config(results_dir: str, run: str) -> tuple[train.TrainConfig, dict]:
    path = Path(results_dir) / run / "config.json"
    if not path.exists():
        raise common.UsageError(f"no run {run!r}: {path} does not exist (train it with experiments.cnn).")
    saved = json.loads(path.read_text())
    fields = {f: saved[f] for f in train.TrainConfig.__dataclass_fields__ if f in saved}
    fields["augment"] = tuple(fields.get("augment", ()))
    return train.TrainConfig(**fields), saved


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def evaluate_run(run: str, which: str = "best", tta: bool = False, *, data_dir=None,
                 checkpoint_dir: str = "checkpoints", results_dir: str = "results") -> dict:
    """Evaluates one checkpoint of `run` on the test set and writes the report files."""
    cfg, saved = load_config(results_dir, run)
    ckpt_path = Path(checkpoint_dir) / run
    if not ckpt_path.exists():
        raise common.UsageError(f"run {run!r} has no checkpoints in {ckpt_path}.")
    ckpts = checkpoint.RunCheckpoints(ckpt_path)
    epoch = ckpts.best_epoch() if which == "best" else ckpts.latest_epoch()
    if epoch is None:
        raise common.UsageError(f"run {run!r} has no {which} checkpoint in {ckpt_path}.")
    model = train.build_model(cfg)
    tx = train.make_optimizer(cfg, 1)
    state = ckpts.restore(epoch, train.init_state(model, tx, jax.random.key(0)))
    ckpts.close()
    ds = data.load(saved.get("dataset", "fashion_mnist"), data_dir)
    predict = train.make_predict(model, cfg.eval_batch_size)
    variables = train.variables_of(state)
    probs = softmax(predict(variables, ds.x_test))
    if tta:
        probs = (probs + softmax(predict(variables, ds.x_test[:, :, ::-1]))) / 2
    y_pred = probs.argmax(-1)
    y_test = ds.y_test.astype(np.int64)
    loss = float(-np.log(np.maximum(probs[np.arange(len(y_test)), y_test], 1e-12)).mean())
    names = data.CLASS_NAMES[saved.get("dataset", "fashion_mnist")]
    rep = report.classification_report(y_test, y_pred, names)
    cm = report.confusion_matrix(y_test, y_pred)
    out = Path(results_dir) / run / f"eval_{which}{'_tta' if tta else ''}"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"run": run, "which": which, "epoch": epoch, "tta": tta, "test_accuracy": rep["accuracy"],
               "test_loss": loss, "n_test": int(len(y_test)), "confusion_matrix": cm.tolist()}
    common.write_json(out / "metrics.json", metrics)
    common.write_json(out / "classification_report.json", rep)
    report.plot_confusion(cm, names, out / "confusion_matrix.png", f"{run} ({which}, epoch {epoch})")
    report.plot_misclassified(ds.x_test, y_test, y_pred, names, out / "misclassified.png")
    print(f"{run} {which} checkpoint (epoch {epoch}){' with flip TTA' if tta else ''}: "
          f"test accuracy {rep['accuracy']:.4f}, loss {loss:.4f}")
    print(report.format_report(rep))
    print(f"files in {out}")
    return metrics


def main(argv):
    del argv
    common.setup_logging()
    try:
        if not FLAGS.run:
            raise common.UsageError("--run is required (a run name under results/).")
        evaluate_run(FLAGS.run, FLAGS.which, FLAGS.tta, data_dir=FLAGS.data_dir,
                     checkpoint_dir=FLAGS.checkpoint_dir, results_dir=FLAGS.results_dir)
    except (common.UsageError, data.DataError, checkpoint.CheckpointError) as e:
        common.fail(str(e))


if __name__ == "__main__":
    app.run(main)
