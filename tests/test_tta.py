"""Test-time augmentation: each named set averages exactly its views' softmax; views shift exactly;
flip TTA gives the bits it always gave; evaluate reports any set of views."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cli, evaluate, tta_views
from fmnist_jax import models
from fmnist_jax.evaluation import ensemble, run_report, scoring, tta
from fmnist_jax.models.layers import preprocess
from tests.conftest import make_dataset


def test_the_named_sets_hold_the_documented_views():
    assert tta.VIEWS["none"] == (tta.View(),)
    assert tta.VIEWS["flip"] == (tta.View(), tta.View(flip=True))
    assert set(tta.VIEWS["flip_shift"]) == {tta.View(f, d, d) for f in (False, True) for d in (0, 1, -1)}
    assert all(views[0] == tta.PLAIN for views in tta.VIEWS.values())
    neighbours = {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}
    assert set(tta.VIEWS["flip_ring"]) == {tta.View(f, 0, 0) for f in (False, True)} | {
        tta.View(f, dy, dx) for f in (False, True) for dy, dx in neighbours}
    assert len(tta.VIEWS["flip_ring"]) == 18 and len(tta.VIEWS["flip_cross"]) == 10
    assert set(tta.VIEWS["flip_diag2"]) == {tta.View(f, d, d) for f in (False, True) for d in (0, 1, -1, 2, -2)}
    assert all(len(set(views)) == len(views) for views in tta.VIEWS.values())      # no view twice


def test_a_view_mirrors_then_shifts_with_background_fill():
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    out = np.asarray(tta.apply_view(x, tta.View(True, 1, -1)))
    mirrored = np.asarray(x)[:, :, ::-1]
    np.testing.assert_array_equal(out[:, 1:, :-1], mirrored[:, :-1, 1:])
    assert not out[:, 0].any() and not out[:, :, -1].any()
    np.testing.assert_array_equal(tta.apply_view(x, tta.PLAIN), x)


@pytest.fixture(scope="module")
def mlp_members():
    """Two members of the mlp (randomly initialised: TTA does not care) and some test images."""
    model = models.create("mlp")
    keys = jax.random.split(jax.random.key(0), 2)
    variables = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 28, 28)), train=False))(keys)
    return model, variables, make_dataset(n_test=30).x_test


@pytest.mark.parametrize("name", sorted(tta.VIEWS))
def test_tta_averages_exactly_the_named_views_softmax(name, mlp_members):
    model, variables, x = mlp_members
    predict = scoring.make_member_predict(scoring.inference(model), batch_size=16)
    got = ensemble.mean_probabilities(tta.view_logits(predict, variables, x, name))
    want = np.zeros_like(got)
    for view in tta.VIEWS[name]:
        for m in range(2):
            v = jax.tree.map(lambda a, m=m: a[m], variables)
            logits = model.apply(v, tta.apply_view(preprocess(jnp.asarray(x)), view), train=False)
            want[m] += ensemble.softmax(np.asarray(logits)) / len(tta.VIEWS[name])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_flip_tta_is_bit_identical_to_the_mirror_average_of_before(mlp_members):
    model, variables, x = mlp_members
    predict = scoring.make_member_predict(scoring.inference(model), batch_size=16)
    logits, flipped = predict(variables, x), predict(variables, x, view=tta.View(flip=True))
    # The mirror average of before: (softmax(image) + softmax(mirror image)) / 2.
    np.testing.assert_array_equal(ensemble.mean_probabilities(tta.view_logits(predict, variables, x, "flip")),
                                  (ensemble.softmax(logits) + ensemble.softmax(flipped)) / 2)
    np.testing.assert_array_equal(predict(variables, np.asarray(x)[:, :, ::-1]), flipped)


def test_evaluate_reports_the_chosen_views(mlp_ensemble):
    flags, _, results = mlp_ensemble
    metrics = cli.invoke(evaluate, ["--run=mlp2", "--tta_views=flip_shift", *flags])
    assert metrics["tta"] == "flip_shift" and (results / "eval_best_tta_flip_shift" / "metrics.json").exists()
    assert "with flip_shift TTA" in run_report.describe(metrics)
    # --tta keeps its meaning (flip) and its folder; a bool still reads as before.
    flipped = cli.invoke(evaluate, ["--run=mlp2", "--tta", *flags])
    assert flipped["tta"] == "flip" and (results / "eval_best_tta" / "metrics.json").exists()
    assert run_report.tta_views(True) == "flip" and run_report.tta_views(False) == "none"
    assert "TTA" not in run_report.describe(cli.invoke(evaluate, ["--run=mlp2", *flags])).splitlines()[0]


def test_views_are_chosen_on_the_validation_split_training_held_out(mlp_ensemble, capsys):
    flags, _, results = mlp_ensemble
    rows = {r["views"]: r for r in cli.invoke(tta_views, [f"--run={results.name}", *flags])}
    assert set(rows) == set(tta.VIEWS)
    # The plain views score exactly what training measured on its validation split: the split is
    # rebuilt as it was (and it is not the test set).
    summary = json.loads((results / "summary.json").read_text())
    assert rows["none"]["member_accuracy"] == pytest.approx(summary["best_val_accuracy"])
    assert json.loads((results / "tta_views_best.json").read_text())["views"][0]["views"] == "none"
    assert "<- best" in capsys.readouterr().out
