"""Analysis: calibration, t-SNE, recorded features and feature maps, and experiments.analyze end to end."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import analyze, cli
from fmnist_jax import models
from fmnist_jax.analysis import introspection
from tests.conftest import assert_exits_with_sentence


def test_ece_of_a_perfectly_calibrated_toy_is_zero():
    # In each confidence level, the share of right predictions equals the confidence.
    probs, labels = [], []
    for confidence, n, right in ((0.9, 10, 9), (0.5, 4, 2), (0.25, 8, 2)):
        p = np.full((n, 10), (1 - confidence) / 9)
        p[:, 0] = confidence
        probs.append(p)
        labels.append([0] * right + [1] * (n - right))
    cal = introspection.calibration(np.concatenate(probs), np.concatenate(labels))
    assert cal["ece"] == pytest.approx(0.0, abs=1e-12) and cal["mce"] == pytest.approx(0.0, abs=1e-12)
    assert sum(cal["count"]) == 22


def test_ece_of_a_confidently_wrong_model_is_its_confidence():
    p = np.full((5, 10), 0.1 / 9)
    p[:, 3] = 0.9
    cal = introspection.calibration(p, np.zeros(5, int))
    assert cal["ece"] == pytest.approx(0.9) and cal["mean_confidence_wrong"] == pytest.approx(0.9)
    assert cal["mean_confidence_correct"] is None


def test_per_class_accuracy_and_sampling():
    acc = introspection.per_class_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    np.testing.assert_allclose(acc[:3], [0.5, 1.0, 0.0])
    assert np.isnan(acc[3])
    idx = introspection.sample_indices(100, 30, seed=0)
    assert len(idx) == 30 and len(set(idx)) == 30 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(introspection.sample_indices(100, 0), np.arange(100))


def test_tsne_gives_finite_coordinates_for_every_point():
    x = np.random.default_rng(0).normal(size=(30, 80)).astype(np.float32)
    xy = introspection.tsne(x, max_iter=250)
    assert xy.shape == (30, 2) and np.all(np.isfinite(xy))


def test_tsne_without_scikit_learn_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(introspection.MissingExtraError, match=r"pip install -e '.\[analysis\]'"):
        introspection.tsne(np.zeros((10, 3)))


EXPECTED_LAYERS = {
    "seed003": {"conv1": (28, 28, 64), "pool1": (14, 14, 64), "conv2": (11, 11, 64), "pool2": (5, 5, 64)},
    "seed004_cnn": {"conv1": (28, 28, 32), "conv2": (28, 28, 32), "pool1": (14, 14, 32),
                    "conv3": (14, 14, 64), "conv4": (14, 14, 64), "pool2": (7, 7, 64)},
}


@pytest.mark.parametrize("name, features, filters", [("seed003", 64, (64, 4, 4)), ("mlp", 256, (512, 28, 28))])
def test_recorded_layers_features_and_filters(name, features, filters):
    model = models.create(name, conv_impl="xla")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    variables = jax.jit(lambda k: model.init({"params": k}, x[:1], train=False))(jax.random.key(0))
    maps = introspection.feature_maps(model, variables, x)
    assert {k: v.shape[1:] for k, v in maps.items()} == EXPECTED_LAYERS.get(name, {})
    assert list(maps) == list(EXPECTED_LAYERS.get(name, {}))       # in the order they are computed
    assert all(v.shape[0] == 3 for v in maps.values())
    # The penultimate features are the classifier's input: the last Dense maps them to the logits.
    feats = introspection.penultimate_features(model, variables, x, batch=2)   # a padded last batch
    assert feats.shape == (3, features)
    last = max((k for k in variables["params"] if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    dense = variables["params"][last]
    np.testing.assert_allclose(feats @ dense["kernel"] + dense["bias"], jax.jit(lambda v: model.apply(v, x, train=False))(variables),
                               rtol=1e-4, atol=1e-4)
    assert introspection.first_layer_filters(variables).shape == filters


def test_the_speedrun_net_records_its_layers_and_shows_its_fixed_whitening_filters():
    model = models.create("speedrun", widths=(32, 64, 128), conv_impl="xla")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    variables = jax.jit(lambda k: model.init({"params": k}, x[:1], train=False))(jax.random.key(0))
    maps = introspection.feature_maps(model, variables, x)
    assert {k: v.shape[1:] for k, v in maps.items()} == {"conv0": (28, 28, 18), "conv1": (14, 14, 32),
                                                         "conv2": (7, 7, 64), "conv3": (3, 3, 128)}
    feats = introspection.penultimate_features(model, variables, x, batch=2)
    np.testing.assert_allclose(feats @ variables["params"]["Dense_0"]["kernel"] * model.logit_scale,
                               jax.jit(lambda v: model.apply(v, x, train=False))(variables), rtol=1e-4, atol=1e-4)
    # The whitening kernel is not a parameter (it is never trained) but is the first layer.
    assert introspection.first_layer_filters(variables).shape == (9, 3, 3)


def test_every_conv_zoo_model_records_conv_and_pool_layers():
    for name, args in [("seed002", {}), ("seed004_resnet", {}), ("inception", {}),
                       ("resnet", {"stage_sizes": (1, 1, 1), "widths": (16, 32, 64)})]:
        model = models.create(name, **args)
        shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 28, 28)),
                                                   train=False))
        _, state = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 28, 28)), train=False,
                                                        mutable=["intermediates"]), shapes)
        names = {path for path, _ in introspection._walk(dict(state["intermediates"]))} - {"features"}
        assert "features" in state["intermediates"] and len(names) > 4, name
        assert all(n.split("/")[-1].startswith(("conv", "pool")) for n in names), name
        assert "intermediates" not in shapes        # nothing recorded unless asked for


def test_analyze_an_ensemble_run_and_one_member(mlp_ensemble, capsys):
    flags, ds, out = mlp_ensemble
    summary = cli.invoke(analyze, ["--run=mlp2", "--tsne_points=0", "--tsne_iter=250", *flags])
    folder = out / "analysis_best"
    assert "expected calibration error" in capsys.readouterr().out
    assert summary["subject"] == "ensemble (soft vote)" and summary["tsne_points"] == len(ds.y_test)
    tsne = np.load(folder / "tsne.npz")
    assert tsne["features_tsne"].shape == tsne["pixels_tsne"].shape == (len(ds.y_test), 2)
    assert np.all(np.isfinite(tsne["features_tsne"])) and tsne["features"].shape == (len(ds.y_test), 256)
    np.testing.assert_array_equal(tsne["labels"], ds.y_test)
    evaluated = json.loads((out / "summary.json").read_text())["test"]["best"]["ensemble_accuracy"]
    assert summary["test_accuracy"] == pytest.approx(evaluated)
    cal = json.loads((folder / "calibration.json").read_text())
    assert cal["ece"] == pytest.approx(summary["ece"]) and sum(cal["count"]) == len(ds.y_test)
    assert list(summary["per_class_accuracy"])[-1] == "Ankle boot"
    maps = np.load(folder / "feature_maps.npz")
    assert maps["first_layer_filters"].shape == (512, 28, 28) and maps["images"].shape == (4, 28, 28)
    for png in ("tsne_features.png", "tsne_pixels.png", "first_layer_filters.png", "reliability.png",
                "confidence_histogram.png", "per_class_accuracy.png"):
        assert (folder / png).stat().st_size > 0, png
    member = cli.invoke(analyze, ["--run=mlp2", "--member=1", "--which=latest", "--tsne_points=20",
                                  "--feature_images=2", "--tsne_iter=250", *flags])
    assert member["subject"] == "member 1" and member["features_of"] == "member 1"
    assert np.load(out / "analysis_latest_member1" / "tsne.npz")["features_tsne"].shape == (20, 2)
    assert_exits_with_sentence(capsys, "--member must be in 0..1", cli.invoke, analyze,
                               ["--run=mlp2", "--member=2", *flags])
