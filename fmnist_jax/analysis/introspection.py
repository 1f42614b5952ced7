"""Looking inside a trained model: penultimate features, feature maps, first-layer filters,
t-SNE embeddings and calibration.

The zoo records what is looked at with `layers.record` (flax ``sow`` into "intermediates"):
"conv<i>" / "pool<i>" for convolution and pooling outputs, named per module path (e.g.
"BasicBlock_2/conv1"), and "features" for the penultimate activations. Models are applied with
``train=False, mutable=["intermediates"]``.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np

from fmnist_jax.errors import UserError
from fmnist_jax.models.layers import INTERMEDIATES


class MissingExtraError(UserError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def _walk(tree: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}/")
        else:
            yield prefix + key, value


def intermediates(model, variables: dict, x) -> dict[str, np.ndarray]:
    """Everything the model records for images `x`, {path: array}, in the order it was computed."""
    order = []

    @jax.jit
    def record(v, images):
        _, state = model.apply(v, images, train=False, mutable=[INTERMEDIATES])
        flat = list(_walk(dict(state.get(INTERMEDIATES, {}))))
        order[:] = [path for path, _ in flat]          # jit's outputs come back with sorted keys
        return [values[0] for _, values in flat]

    values = record(variables, x)
    return {path: np.asarray(a) for path, a in zip(order, values)}


def feature_maps(model, variables: dict, x) -> dict[str, np.ndarray]:
    """The convolution and pooling outputs [N, H, W, C] for images `x`, {layer path: array}, in order."""
    return {path: a for path, a in intermediates(model, variables, x).items()
            if a.ndim == 4 and path.split("/")[-1].startswith(("conv", "pool"))}


def penultimate_features(model, variables: dict, x, batch: int = 500) -> np.ndarray:
    """The "features" the model records (the classifier's input) for images `x`: [N, D] float32.

    Runs in jitted batches of `batch` (the last one padded, so one program serves them all).
    """
    @jax.jit
    def features(v, images):
        _, state = model.apply(v, images, train=False, mutable=[INTERMEDIATES])
        return state[INTERMEDIATES]["features"][0]

    x = np.asarray(x)
    n, out = len(x), []
    batch = max(1, min(batch, n))
    for start in range(0, n, batch):
        chunk = x[start:start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        out.append(np.asarray(features(variables, chunk))[:batch - pad])
    return np.concatenate(out).astype(np.float32)


def first_layer_filters(variables: dict) -> np.ndarray | None:
    """The first layer's weights as images [F, h, w]: the kernels of the convolution that reads
    the grey input (one input channel), or, for a dense first layer, each unit's 784 weights as
    28x28. None when neither is found. Fixed layers count too (the speedrun net's whitening
    kernel is in the batch_stats collection), after the trained parameters."""
    leaves = dict(_walk({name: dict(variables[name]) for name in ("params", "batch_stats") if name in variables}))
    for path, w in leaves.items():
        w = np.asarray(w)
        if path.endswith("kernel") and w.ndim == 4 and w.shape[2] == 1:
            return np.moveaxis(w[:, :, 0, :], -1, 0)
    for path, w in leaves.items():
        w = np.asarray(w)
        if path.endswith("kernel") and w.ndim == 2 and w.shape[0] == 28 * 28:
            return w.T.reshape(-1, 28, 28)
    return None


SMALL_TSNE = 1000


def tsne(x: np.ndarray, seed: int = 0, pca_dims: int = 50, perplexity: float = 30.0,
         max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE coordinates [N, 2] of the rows of `x` (scikit-learn), after PCA to `pca_dims`.

    Seeded (the same input and seed give the same embedding). Perplexity is capped below N/3 so
    small sets work. Needs the `analysis` extra (scikit-learn).
    """
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise MissingExtraError("t-SNE needs scikit-learn, which is not installed: "
                                "pip install -e '.[analysis]'.") from e
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    n = len(x)
    if n < 5:
        raise UserError(f"t-SNE needs at least 5 points, got {n}.")
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    dims = min(pca_dims, n, x.shape[1])
    # Below a few thousand points thread start-up and barriers cost more than they save (5x on 2 cores).
    with threadpool_limits(limits=1 if n < SMALL_TSNE else None):
        if dims < x.shape[1]:
            x = PCA(n_components=dims, random_state=seed).fit_transform(x)
        embedding = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca",
                         learning_rate="auto", max_iter=max_iter, random_state=seed)
        return embedding.fit_transform(x).astype(np.float32)


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict:
    """Reliability of the predicted class's probability (its confidence) on [N, C] `probs`.

    Confidences are grouped in `bins` equal-width bins of [0, 1]; the expected calibration error
    is sum over bins of (bin size / N) * |accuracy - mean confidence| (Guo et al. 2017), 0 for a
    perfectly calibrated model. Returns the bins, ECE, the maximum gap, and every example's
    confidence and correctness.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    nonzero = count > 0
    accuracy = np.divide(acc_sum, count, out=np.zeros(bins), where=nonzero)
    mean_conf = np.divide(conf_sum, count, out=np.zeros(bins), where=nonzero)
    gaps = np.abs(accuracy - mean_conf) * nonzero
    n = max(len(labels), 1)
    return {
        "bins": bins, "edges": edges.tolist(), "count": count.tolist(),
        "accuracy": accuracy.tolist(), "confidence": mean_conf.tolist(),
        "ece": float((count / n * gaps).sum()), "mce": float(gaps.max()) if len(gaps) else 0.0,
        "accuracy_overall": float(correct.mean()) if len(labels) else 0.0,
        "mean_confidence_correct": float(confidence[correct].mean()) if correct.any() else None,
        "mean_confidence_wrong": float(confidence[~correct].mean()) if (~correct).any() else None,
        "example_confidence": confidence, "example_correct": correct,
    }


def per_class_accuracy(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """Accuracy (recall) of each true class [C]; NaN for a class absent from `y_true`."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    total = np.bincount(y_true, minlength=num_classes).astype(float)
    right = np.bincount(y_true[y_true == y_pred], minlength=num_classes).astype(float)
    return np.divide(right, total, out=np.full(num_classes, np.nan), where=total > 0)


def sample_indices(n: int, points: int, seed: int = 0) -> np.ndarray:
    """`points` sorted indices into range(n), seeded; all of them when points is 0 or at least n."""
    if points <= 0 or points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, points, replace=False))
