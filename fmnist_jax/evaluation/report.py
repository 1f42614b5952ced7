"""Evaluation reports: confusion matrix, per-class precision/recall/F1, and the plots (PNG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmnist_jax.errors import RunError  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Saves `fig` as PNG atomically (a temporary name, then a rename), so no reader and no crash
    ever sees half an image; the old file stays if the disk is full."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunError(f"cannot write {path} ({e.strerror}).") from e


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Per-class precision, recall, F1 and support, plus accuracy and macro/weighted averages.

    Same definitions as scikit-learn's classification_report (0 where a denominator is 0).
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(0).astype(float), cm.sum(1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
    weights = support / max(support.sum(), 1)
    return {
        "per_class": per_class,
        "accuracy": float(tp.sum() / max(support.sum(), 1)),
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean())},
        "weighted_avg": {"precision": float(precision @ weights), "recall": float(recall @ weights),
                         "f1": float(f1 @ weights)},
    }


def format_report(report: dict) -> str:
    """The report as an aligned text table."""
    width = max(len(n) for n in report["per_class"]) + 2
    lines = [f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, m in report["per_class"].items():
        lines.append(f"{name:<{width}}{m['precision']:10.4f}{m['recall']:10.4f}{m['f1']:10.4f}{m['support']:10d}")
    for avg in ("macro_avg", "weighted_avg"):
        m = report[avg]
        lines.append(f"{avg:<{width}}{m['precision']:10.4f}{m['recall']:10.4f}{m['f1']:10.4f}")
    lines.append(f"{'accuracy':<{width}}{report['accuracy']:30.4f}")
    return "\n".join(lines)


def plot_history(history: Sequence[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train vs validation: validation at the epochs that were
    validated (all, every val_every-th, or none for a run without a validation split)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split in ("train", "val"):
        rows = [h for h in history if f"{split}_accuracy" in h]
        if not rows:
            continue
        epochs = [h["epoch"] for h in rows]
        # Markers show which epochs hold a point when validation skips epochs.
        marker = "o" if len(rows) < len(history) else None
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in rows], label=split, marker=marker)
        ax_acc.plot(epochs, [h[f"{split}_accuracy"] for h in rows], label=split, marker=marker)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Confusion matrix with counts in every cell."""
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    threshold = cm.max() / 2
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_misclassified(images, y_true, y_pred, class_names: Sequence[str], path: Path,
                       count: int = 25) -> int:
    """A grid of the first `count` misclassified images with true / predicted labels; returns how many."""
    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))[:count]
    cols = 5
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, i in zip(np.ravel(axes), wrong):
        ax.imshow(np.asarray(images[i]).reshape(28, 28), cmap="gray_r")
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return len(wrong)


def plot_sweep(rows: Sequence[dict], path: Path, title: str = "") -> None:
    """Validation accuracy (mean ± std over seeds) of each sweep configuration, best on top."""
    rows = list(rows)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["val_mean"] for r in rows], xerr=[r["val_std"] for r in rows], color="tab:blue",
            alpha=0.7, capsize=3)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    lo = min(r["val_mean"] - r["val_std"] for r in rows)
    hi = max(r["val_mean"] + r["val_std"] for r in rows)
    ax.set_xlim(max(0.0, lo - 0.1 * (hi - lo + 1e-3)), min(1.0, hi + 0.1 * (hi - lo + 1e-3)))
    ax.set_xlabel("best validation accuracy (mean ± std over seeds)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
