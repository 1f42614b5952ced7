"""A trained run's checkpoint scored on the test set, with the full report.

Accuracy and loss, per-class precision/recall/F1, the confusion matrix and misclassified
images, of the ensemble of the run's members (soft vote) or of one member, written under
results/<run>/eval_<which>[_member<i>][_tta]/.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from fmnist_jax import data, ensemble, report, restore
from fmnist_jax.config import TrainConfig
from fmnist_jax.models import layers
from fmnist_jax.run import load_trainer
from fmnist_jax.run_files import RunPaths, write_json

log = logging.getLogger(__name__)

WHICH = restore.WHICH


def evaluate_run(paths: RunPaths, which: str = "best", tta: bool = False, member: int | None = None, *,
                 data_dir=None, conv_impl: str | None = None, eval_batch: int | None = None) -> dict:
    """Evaluates one checkpoint of a run on the test set, writes the report files, returns metrics.json.

    which: each member's best-validation variables ("best") or the latest epoch's ("latest").
    tta: average each member's softmax with that of the mirrored image. member: report on this
    member alone instead of the ensemble. conv_impl / eval_batch: how to execute (None: as trained).
    """
    restore.check_which(which)
    # The execution overrides are checked as any config's, before the run is read.
    dataclasses.replace(TrainConfig(), conv_impl=conv_impl or "auto",
                        eval_batch=1 if eval_batch is None else eval_batch).validate()
    t, ds = load_trainer(paths, data_dir=data_dir, conv_impl=conv_impl, eval_batch=eval_batch)
    restored = restore.restore_run(paths, which, mesh=t.mesh, conv_impl=conv_impl, eval_batch=eval_batch)
    restored.check_member(member)
    n_members = restored.n_members
    variables = restored.variables
    x_test = t.replicate(ds.x_test)
    logits = t.predict(variables, x_test)
    probs = ensemble.member_probabilities(logits, t.predict(variables, x_test, flip=True) if tta else None)
    y_test = ds.y_test.astype(np.int64)
    scores = ensemble.score(probs, y_test)
    chosen = probs.mean(0) if member is None else probs[member]
    y_pred = chosen.argmax(-1)
    names = data.CLASS_NAMES[t.cfg.dataset]
    rep = report.classification_report(y_test, y_pred, names)
    cm = report.confusion_matrix(y_test, y_pred)
    suffix = ("" if member is None else f"_member{member}") + ("_tta" if tta else "")
    out = paths.results / f"eval_{which}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    epochs = restored.epochs
    subject = "ensemble" if member is None else f"member {member}"
    metrics = {"run": paths.name, "which": which, "member": member, "epochs": epochs, "tta": tta,
               "subject": subject if n_members > 1 else "model",
               "test_accuracy": rep["accuracy"], "test_loss": float(ensemble.nll(chosen, y_test)),
               "n_test": int(len(y_test)), "members": scores, "confusion_matrix": cm.tolist(),
               "conv_impl": layers.resolve_conv_impl(t.cfg.conv_impl), "eval_batch": t.cfg.eval_batch,
               "folder": str(out)}
    write_json(out / "metrics.json", metrics)
    write_json(out / "classification_report.json", rep)
    report.plot_confusion(cm, names, out / "confusion_matrix.png", f"{paths.name} ({which}, {subject})")
    report.plot_misclassified(ds.x_test, y_test, y_pred, names, out / "misclassified.png")
    return metrics | {"report": rep}


def describe(metrics: dict) -> str:
    """What `evaluate_run` found, as the lines a person reads."""
    n = len(metrics["epochs"])
    plural = "s" if n > 1 else ""
    lines = [f"{metrics['run']} {metrics['which']} checkpoint{plural} (epoch{plural} "
             f"{', '.join(map(str, metrics['epochs']))}){' with flip TTA' if metrics['tta'] else ''}, "
             f"{metrics['subject']}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}"]
    if n > 1:
        s = metrics["members"]
        lines.append(f"members: {', '.join(f'{a:.4f}' for a in s['member_accuracy'])} -> "
                     f"{s['mean_accuracy']:.4f} ± {s['std_accuracy']:.4f}; ensemble {s['ensemble_accuracy']:.4f}")
    lines.append(report.format_report(metrics["report"]))
    lines.append(f"files in {metrics['folder']}")
    return "\n".join(lines)
