"""A trained run looked into, as a flag-free library call:

    summary = analysis_run.analyze_run(RunPaths("my_run"), which="best")

writes results/<run>/analysis_<which>[_member<i>]/: t-SNE of the test set's penultimate features
and of its raw pixels, the feature maps of every convolution and pooling layer for a few test
images with the first layer's filters, calibration (reliability diagram, ECE, confidence of right
and wrong predictions) and per-class accuracy, as PNG plus introspection.json, calibration.json,
tsne.npz and feature_maps.npz. For a run of several members the predictions analysed are the
soft vote unless `member` picks one; features and feature maps are of one network (`member`,
default 0).
"""

from __future__ import annotations

import logging

import numpy as np

from fmnist_jax.analysis import introspection, plots
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError
from fmnist_jax.evaluation import ensemble
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import RunPaths, write_json, write_npz

log = logging.getLogger(__name__)

MAX_FEATURE_IMAGES = 16


def pick_feature_images(labels: np.ndarray, k: int) -> np.ndarray:
    """k test indices: the first image of each class in class order, then the next ones."""
    labels = np.asarray(labels)
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    rest = [i for i in range(len(labels)) if i not in set(firsts)][: max(0, k - len(firsts))]
    return np.asarray((firsts + rest)[:k])


def _layer_file(i: int, name: str) -> str:
    return f"{i:02d}_{name.replace('/', '_')}.png"


def analyze_run(paths: RunPaths, which: str = "best", member: int | None = None, *, data_dir=None,
                tsne_points: int = 2000, feature_images: int = 4, tsne_iter: int = 1000, seed: int = 0) -> dict:
    """Analyses one checkpoint of a run on the test set, writes the files, returns introspection.json.

    tsne_points: test images embedded (0: all 10,000), a seeded sample; feature_images: test
    images whose feature maps are drawn (one per class first); tsne_iter: t-SNE iterations.
    """
    restore.check_which(which)
    if tsne_points < 0:
        raise ConfigError("tsne_points", f"must be 0 (every test image) or positive, got {tsne_points}.")
    if tsne_iter < 250:
        raise ConfigError("tsne_iter", f"must be at least 250 (scikit-learn's minimum), got {tsne_iter}.")
    if not 1 <= feature_images <= MAX_FEATURE_IMAGES:
        raise ConfigError("feature_images", f"must be in 1..{MAX_FEATURE_IMAGES}, got {feature_images}.")
    restored = restore.restore_run(paths, which)
    restored.check_member(member)
    ds = datasets.load(restored.cfg.dataset, data_dir)
    names, n_members = restored.class_names, restored.n_members
    x_test, y_test = ds.x_test, ds.y_test.astype(np.int64)

    probs = ensemble.member_probabilities(restored.predict()(restored.variables, restored.replicate(x_test)))
    chosen = probs.mean(0) if member is None else probs[member]
    y_pred = chosen.argmax(-1)
    subject = "model" if n_members == 1 else ("ensemble (soft vote)" if member is None else f"member {member}")
    net = 0 if member is None else member
    net_label = "model" if n_members == 1 else f"member {net}"
    label = f"{paths.name} ({which}, {subject})"
    cal = introspection.calibration(chosen, y_test)
    per_class = introspection.per_class_accuracy(y_test, y_pred, len(names))

    model, variables = restored.model, restored.member_variables(net)
    idx = introspection.sample_indices(len(x_test), tsne_points, seed)
    log.info("t-SNE of %d test images: penultimate features and raw pixels", len(idx))
    features = introspection.penultimate_features(model, variables, x_test[idx], batch=restored.cfg.eval_batch)
    features_xy = introspection.tsne(features, seed=seed, max_iter=tsne_iter)
    pixels_xy = introspection.tsne(x_test[idx].reshape(len(idx), -1) / 255.0, seed=seed, max_iter=tsne_iter)
    picked = pick_feature_images(y_test, min(feature_images, len(x_test)))
    maps = introspection.feature_maps(model, variables, x_test[picked])
    filters = introspection.first_layer_filters(variables)

    out = paths.results / (f"analysis_{which}" + ("" if member is None else f"_member{member}"))
    (out / "feature_maps").mkdir(parents=True, exist_ok=True)
    write_npz(out / "tsne.npz", indices=idx, labels=y_test[idx], predicted=y_pred[idx], features=features,
             features_tsne=features_xy, pixels_tsne=pixels_xy)
    plots.plot_embedding(features_xy, y_test[idx], names, out / "tsne_features.png",
                         f"t-SNE of penultimate features ({features.shape[1]}-d), {len(idx)} test images\n"
                         f"{paths.name} ({which}, {net_label})")
    plots.plot_embedding(pixels_xy, y_test[idx], names, out / "tsne_pixels.png",
                         f"t-SNE of raw pixels (784-d), {len(idx)} test images")
    titles = [f"#{i} {names[y_test[i]]}" for i in picked]
    layer_files = {}
    for i, (name, a) in enumerate(maps.items()):
        layer_files[name] = f"feature_maps/{_layer_file(i, name)}"
        plots.plot_feature_maps(name, a, x_test[picked], titles, out / layer_files[name])
    arrays = {name.replace("/", "."): a for name, a in maps.items()}
    if filters is not None:
        arrays["first_layer_filters"] = filters
        plots.plot_filters(filters, out / "first_layer_filters.png",
                           f"first-layer filters of {paths.name} ({which}, {net_label}): {filters.shape[0]} of "
                           f"{filters.shape[1]}x{filters.shape[2]}")
    write_npz(out / "feature_maps.npz", images=x_test[picked], indices=picked, **arrays)
    plots.plot_reliability(cal, out / "reliability.png", f"reliability of {label}")
    plots.plot_confidence_histograms(cal["example_confidence"], cal["example_correct"],
                                     out / "confidence_histogram.png", f"confidence of {label}")
    plots.plot_per_class(per_class, names, out / "per_class_accuracy.png",
                         f"per-class test accuracy of {label}: {float((y_pred == y_test).mean()):.4f}")
    calibration = {k: v for k, v in cal.items() if not k.startswith("example_")}
    write_json(out / "calibration.json", calibration)
    summary = {
        "run": paths.name, "which": which, "member": member, "subject": subject, "epochs": restored.epochs,
        "dataset": restored.cfg.dataset, "model": restored.cfg.model, "n_test": int(len(y_test)),
        "test_accuracy": float((y_pred == y_test).mean()), "ece": cal["ece"], "mce": cal["mce"],
        "mean_confidence_correct": cal["mean_confidence_correct"],
        "mean_confidence_wrong": cal["mean_confidence_wrong"],
        "per_class_accuracy": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, per_class)},
        "features_of": net_label, "feature_dim": int(features.shape[1]), "tsne_points": int(len(idx)),
        "feature_images": picked.tolist(),
        "layers": {name: list(a.shape[1:]) for name, a in maps.items()}, "layer_files": layer_files,
        "first_layer_filters": None if filters is None else list(filters.shape),
        "folder": str(out),
    }
    write_json(out / "introspection.json", summary)
    return summary


def describe(summary: dict) -> str:
    """What `analyze_run` found, as the lines a person reads."""
    worst = min((a, n) for n, a in summary["per_class_accuracy"].items() if a is not None)
    wrong = summary["mean_confidence_wrong"]
    return "\n".join([
        f"{summary['run']} {summary['which']} checkpoint, {summary['subject']}: test accuracy "
        f"{summary['test_accuracy']:.4f}, expected calibration error {summary['ece']:.4f}"
        + (f", mean confidence {summary['mean_confidence_correct']:.3f} when right and {wrong:.3f} when wrong"
           if wrong is not None and summary['mean_confidence_correct'] is not None else ""),
        f"weakest class: {worst[1]} ({worst[0]:.4f}); t-SNE of {summary['tsne_points']} test images "
        f"({summary['feature_dim']}-d features of "
        f"{'the model' if summary['features_of'] == 'model' else summary['features_of']}); feature maps of "
        f"{len(summary['layers'])} layers for {len(summary['feature_images'])} images",
        f"files in {summary['folder']}",
    ])
