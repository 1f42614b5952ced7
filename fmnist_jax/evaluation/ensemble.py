"""Scoring the members of a run together: each member, mean ± std, and the ensemble vote.

The ensemble predicts the class of highest mean softmax over members (soft voting). Flip TTA
(and the other test-time augmentations of `fmnist_jax.evaluation.tta`) averages each member's softmax over
the views of each image before anything else.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 for stable averaging."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def member_probabilities(logits: np.ndarray) -> np.ndarray:
    """[M, N, C] class probabilities of each member (TTA views: `mean_probabilities`)."""
    return softmax(logits)


def mean_probabilities(view_logits) -> np.ndarray:
    """[M, N, C] class probabilities of each member: the mean softmax over the views' logits
    (a sequence of [M, N, C] arrays, e.g. `tta.view_logits`)."""
    return np.mean([softmax(logits) for logits in view_logits], axis=0)


def nll(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood of `labels` [N] under `probs` [..., N, C] (one value per leading index)."""
    labels = np.asarray(labels).astype(np.int64)
    picked = np.take_along_axis(probs, np.broadcast_to(labels[:, None], probs.shape[:-1] + (1,)), axis=-1)[..., 0]
    return -np.log(np.maximum(picked, 1e-12)).mean(-1)


def score(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and loss of every member [M, N, C] and of their soft vote.

    std is the sample standard deviation over members (ddof=1; 0 for a single member), the
    convention of reporting "mean ± std over N seeds".
    """
    labels = np.asarray(labels).astype(np.int64)
    accuracy = (probs.argmax(-1) == labels).mean(-1)
    vote = probs.mean(0)
    return {
        "member_accuracy": accuracy.tolist(),
        "member_loss": nll(probs, labels).tolist(),
        "mean_accuracy": float(accuracy.mean()),
        "std_accuracy": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
        "ensemble_accuracy": float((vote.argmax(-1) == labels).mean()),
        "ensemble_loss": float(nll(vote, labels)),
    }


def vote(probs: np.ndarray) -> np.ndarray:
    """The ensemble's predicted classes [N] from member probabilities [M, N, C]."""
    return probs.mean(0).argmax(-1)
