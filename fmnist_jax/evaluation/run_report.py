"""A trained run's checkpoint scored on the test set, with the full report.

Accuracy and loss, per-class precision/recall/F1, the confusion matrix and misclassified
images, of the ensemble of the run's members (soft vote) or of one member, written under
results/<run>/eval_<which>[_member<i>][_tta[_<views>]]/.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from fmnist_jax.config import TrainConfig
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError
from fmnist_jax.evaluation import ensemble, report
from fmnist_jax.evaluation import tta as tta_lib
from fmnist_jax.models import layers
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import RunPaths, write_json

log = logging.getLogger(__name__)

WHICH = restore.WHICH


def tta_views(tta: bool | str) -> str:
    """The name of the TTA views `tta` stands for: a name of `tta.VIEWS`, or a bool (earlier
    callers': True is "flip", False "none"); ConfigError("tta_views", ...) for an unknown name."""
    if isinstance(tta, bool):
        return "flip" if tta else "none"
    if tta not in tta_lib.VIEWS:
        raise ConfigError("tta_views", f"does not know {tta!r}; choose from {', '.join(tta_lib.VIEWS)}.")
    return tta


def eval_folder_name(which: str, member: int | None, tta: str) -> str:
    """eval_<which>[_member<i>][_tta[_<views>]]: flip TTA keeps the folder name it always had."""
    suffix = "" if tta == "none" else "_tta" if tta == "flip" else f"_tta_{tta}"
    return f"eval_{which}" + ("" if member is None else f"_member{member}") + suffix


def evaluate_run(paths: RunPaths, which: str = "best", tta: bool | str = False, member: int | None = None, *,
                 data_dir=None, conv_impl: str | None = None, eval_batch: int | None = None) -> dict:
    """Evaluates one checkpoint of a run on the test set, writes the report files, returns metrics.json.

    which: each member's selected variables ("best": the epoch the run's `select` chose) or the latest epoch's ("latest").
    tta: test-time augmentation, a name of `tta.VIEWS` ("none", "flip", "flip_shift", "flip_cross",
    ...: each member's softmax averaged over those views of the image; True means "flip"). member: report on this
    member alone instead of the ensemble. conv_impl / eval_batch: how to execute (None: as trained).
    """
    tta = tta_views(tta)
    restore.check_which(which)
    # The execution overrides are checked as any config's, before the run is read.
    dataclasses.replace(TrainConfig(), conv_impl=conv_impl or "auto",
                        eval_batch=1 if eval_batch is None else eval_batch).validate()
    restored = restore.restore_run(paths, which, conv_impl=conv_impl, eval_batch=eval_batch)
    restored.check_member(member)
    cfg, n_members = restored.cfg, restored.n_members
    ds = datasets.load(cfg.dataset, data_dir)
    x_test = restored.replicate(ds.x_test)
    probs = ensemble.mean_probabilities(tta_lib.view_logits(restored.predict(), restored.variables, x_test, tta))
    y_test = ds.y_test.astype(np.int64)
    scores = ensemble.score(probs, y_test)
    chosen = probs.mean(0) if member is None else probs[member]
    y_pred = chosen.argmax(-1)
    names = datasets.CLASS_NAMES[cfg.dataset]
    rep = report.classification_report(y_test, y_pred, names)
    cm = report.confusion_matrix(y_test, y_pred)
    out = paths.results / eval_folder_name(which, member, tta)
    out.mkdir(parents=True, exist_ok=True)
    epochs = restored.epochs
    subject = "ensemble" if member is None else f"member {member}"
    metrics = {"run": paths.name, "which": which, "member": member, "epochs": epochs, "tta": tta,
               "subject": subject if n_members > 1 else "model",
               "test_accuracy": rep["accuracy"], "test_loss": float(ensemble.nll(chosen, y_test)),
               "n_test": int(len(y_test)), "members": scores, "confusion_matrix": cm.tolist(),
               "conv_impl": layers.resolve_conv_impl(cfg.conv_impl), "eval_batch": cfg.eval_batch,
               "folder": str(out)}
    write_json(out / "metrics.json", metrics)
    write_json(out / "classification_report.json", rep)
    report.plot_confusion(cm, names, out / "confusion_matrix.png", f"{paths.name} ({which}, {subject})")
    report.plot_misclassified(ds.x_test, y_test, y_pred, names, out / "misclassified.png")
    return metrics | {"report": rep}


def _with_tta(tta: bool | str) -> str:
    views = tta_views(tta)        # metrics.json of earlier evaluations hold a bool
    return "" if views == "none" else f" with {views} TTA"


def describe(metrics: dict) -> str:
    """What `evaluate_run` found, as the lines a person reads."""
    n = len(metrics["epochs"])
    plural = "s" if n > 1 else ""
    lines = [f"{metrics['run']} {metrics['which']} checkpoint{plural} (epoch{plural} "
             f"{', '.join(map(str, metrics['epochs']))}){_with_tta(metrics['tta'])}, "
             f"{metrics['subject']}: test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}"]
    if n > 1:
        s = metrics["members"]
        lines.append(f"members: {', '.join(f'{a:.4f}' for a in s['member_accuracy'])} -> "
                     f"{s['mean_accuracy']:.4f} ± {s['std_accuracy']:.4f}; ensemble {s['ensemble_accuracy']:.4f}")
    lines.append(report.format_report(metrics["report"]))
    lines.append(f"files in {metrics['folder']}")
    return "\n".join(lines)
