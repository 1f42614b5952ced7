"""The plots of `experiments.analyze`: t-SNE embeddings, feature maps, filters, calibration,
per-class accuracy (matplotlib, Agg backend, PNG files written atomically)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_CHANNELS = 16


def save(fig, path: Path, dpi: int = 100) -> None:
    """Writes `fig` to `path` through a temporary name (never a half-written PNG) and closes it."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def plot_embedding(xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path,
                   title: str) -> None:
    """A 2-D embedding, one colour per class, with a legend of class names."""
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10")
    size = 4 if len(xy) > 3000 else 10
    for c, name in enumerate(class_names):
        pick = labels == c
        ax.scatter(xy[pick, 0], xy[pick, 1], s=size, color=cmap(c % 10), label=name, alpha=0.7, linewidths=0)
    ax.legend(markerscale=3 if size < 10 else 1.5, fontsize=8, loc="best", framealpha=0.8)
    ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    save(fig, path)


def mosaic(maps: np.ndarray, channels: int, gap: int = 1) -> np.ndarray:
    """One image's first `channels` channels [H, W, C] side by side, each scaled to [0, 1], NaN gaps."""
    h, w, _ = maps.shape
    out = np.full((h, channels * (w + gap) - gap), np.nan)
    for j in range(channels):
        m = maps[:, :, j].astype(np.float64)
        span = m.max() - m.min()
        out[:, j * (w + gap): j * (w + gap) + w] = (m - m.min()) / span if span > 0 else 0.0
    return out


def plot_feature_maps(name: str, maps: np.ndarray, images: np.ndarray, titles: Sequence[str], path: Path,
                      max_channels: int = MAX_CHANNELS) -> None:
    """One layer's activations [K, H, W, C]: a row per image, the input then its first channels
    side by side (each channel scaled to its own range)."""
    k, h, w, c = maps.shape
    shown = min(c, max_channels)
    fig, axes = plt.subplots(k, 2, figsize=(1.3 + 0.75 * shown, 1.0 * k + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, shown * (w + 1) / h]})
    for i in range(k):
        axes[i, 0].imshow(np.asarray(images[i]).reshape(28, 28), cmap="gray")
        axes[i, 0].set_title(titles[i], fontsize=7)
        axes[i, 1].imshow(mosaic(maps[i], shown), cmap="viridis", interpolation="nearest")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{name}: {h}x{w}x{c}" + (f" (channels 0-{shown - 1})" if shown < c else ""), fontsize=9)
    fig.tight_layout()
    save(fig, path)


def plot_filters(filters: np.ndarray, path: Path, title: str, max_filters: int = 64) -> None:
    """The first layer's filters [F, h, w] as one grid image (each filter scaled to its own range)."""
    filters = np.asarray(filters[:max_filters], np.float64)
    n, h, w = filters.shape
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, f in enumerate(filters):
        span = f.max() - f.min()
        r, c = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = (f - f.min()) / span if span > 0 else 0.5
    fig, ax = plt.subplots(figsize=(1.0 * cols + 0.4, 1.0 * rows + 0.8))
    ax.imshow(grid, cmap="gray", interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)


def plot_reliability(cal: Mapping, path: Path, title: str) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the ECE."""
    edges = np.asarray(cal["edges"])
    width = edges[1] - edges[0]
    count = np.asarray(cal["count"])
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(edges[:-1], np.where(count > 0, cal["accuracy"], 0), width=width, align="edge",
           edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    ax.bar(edges[:-1], np.where(count > 0, np.asarray(cal["confidence"]) - np.asarray(cal["accuracy"]), 0),
           bottom=np.where(count > 0, cal["accuracy"], 0), width=width, align="edge", color="tab:red",
           alpha=0.3, hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title}\nECE {cal['ece']:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(edges[:-1], count, width=width, align="edge", color="gray", edgecolor="black")
    ax_n.set(xlabel="confidence (probability of the predicted class)", ylabel="examples")
    ax_n.set_yscale("log" if count.max() > 50 * max(count[count > 0].min(), 1) else "linear")
    fig.tight_layout()
    save(fig, path)


def plot_confidence_histograms(confidence: np.ndarray, correct: np.ndarray, path: Path, title: str) -> None:
    """Histograms of the confidence of right and of wrong predictions (each normalised)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 26)
    for mask, label, colour in ((correct, "right", "tab:green"), (~correct, "wrong", "tab:red")):
        if mask.any():
            ax.hist(confidence[mask], bins=bins, density=True, alpha=0.55, color=colour,
                    label=f"{label} ({int(mask.sum())}, mean {confidence[mask].mean():.3f})")
    ax.set(xlabel="confidence (probability of the predicted class)", ylabel="density", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def plot_per_class(accuracy: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """Horizontal bars of each class's accuracy, with the value written on each bar."""
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(class_names) + 1.2))
    y = np.arange(len(class_names))[::-1]
    values = np.nan_to_num(accuracy)
    ax.barh(y, values, color="tab:blue", alpha=0.8)
    for yi, v, a in zip(y, values, accuracy):
        ax.text(min(v, 0.98), yi, "n/a" if np.isnan(a) else f"{a:.3f}", va="center", ha="right",
                fontsize=8, color="white" if v > 0.15 else "black")
    ax.set_yticks(y, class_names)
    ax.set(xlim=(0, 1), xlabel="accuracy", title=title)
    fig.tight_layout()
    save(fig, path)
