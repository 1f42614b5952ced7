"""experiments.cnn and experiments.evaluate end to end on synthetic data."""

import json

import pytest
from absl.testing import flagsaver

from experiments import cnn, evaluate
from tests.conftest import assert_exits_with_sentence


def _train(dirs, **overrides):
    settings = dict(model="seed003", epochs=1, batch=30, augment="flip,erase", run_name="smoke",
                    val_fraction=0.25, split="stratified") | dirs | overrides
    with flagsaver.flagsaver(**settings):
        cnn.main([])


def test_train_resume_and_evaluate(dirs, tmp_path, capsys):
    _train(dirs)
    out = tmp_path / "results" / "smoke"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["best_epoch"] == [1]
    assert 0.0 <= summary["test_accuracy_best"] <= 1.0 and summary["parameters"] == 493_902
    # A run of one member: its accuracy is the mean and the ensemble's, with no spread.
    best = summary["test"]["best"]
    assert best["member_accuracy"] == [summary["test_accuracy_best"]] == [best["ensemble_accuracy"]]
    assert best["std_accuracy"] == 0.0
    assert summary["conv_impl"] == "winograd"
    assert (out / "history.png").stat().st_size > 0
    # The same command with more epochs resumes from epoch 1 instead of starting over.
    _train(dirs, epochs=2)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    capsys.readouterr()

    with flagsaver.flagsaver(run="smoke", which="best", tta=True, **dirs):
        evaluate.main([])
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "Ankle boot" in printed
    ev = out / "eval_best_tta"
    metrics = json.loads((ev / "metrics.json").read_text())
    report = json.loads((ev / "classification_report.json").read_text())
    assert metrics["n_test"] == 40 and len(report["per_class"]) == 10
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["test_accuracy"] == pytest.approx(summary_after(out)["test_accuracy_best_tta"])
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (ev / png).stat().st_size > 0


def summary_after(out):
    return json.loads((out / "summary.json").read_text())


def test_ensemble_run_reports_members_mean_std_and_vote_and_evaluates(dirs, tmp_path, capsys):
    _train(dirs, seeds=3, split_per_seed=True, split="random", run_name="ens", epochs=2)
    out = tmp_path / "results" / "ens"
    summary = summary_after(out)
    best = summary["test"]["best"]
    assert [m["seed"] for m in summary["members"]] == [0, 1, 2]
    assert len(best["member_accuracy"]) == 3 and len(summary["best_epoch"]) == 3
    assert best["mean_accuracy"] == pytest.approx(sum(best["member_accuracy"]) / 3)
    assert summary["test_accuracy_best_std"] == pytest.approx(best["std_accuracy"])
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(len(h["members"]["val_accuracy"]) == 3 for h in history)
    # Each member's best epoch is the epoch of its highest validation accuracy (earliest on ties).
    for m, epoch in enumerate(summary["best_epoch"]):
        accs = [h["members"]["val_accuracy"][m] for h in history]
        assert epoch == 1 + accs.index(max(accs))
        assert summary["best_val_accuracy"][m] == pytest.approx(max(accs))
    capsys.readouterr()

    with flagsaver.flagsaver(run="ens", which="best", **dirs):
        evaluate.main([])
    metrics = json.loads((out / "eval_best" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(best["ensemble_accuracy"])
    assert metrics["members"]["member_accuracy"] == pytest.approx(best["member_accuracy"])
    assert "ensemble" in capsys.readouterr().out
    with flagsaver.flagsaver(run="ens", which="latest", member=2, **dirs):
        evaluate.main([])
    metrics = json.loads((out / "eval_latest_member2" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(summary["test"]["final"]["member_accuracy"][2])
    with flagsaver.flagsaver(run="ens", member=3, **dirs), pytest.raises(SystemExit):
        evaluate.main([])
    assert "--member must be in 0..2" in capsys.readouterr().err


def test_changed_config_does_not_silently_resume(dirs, capsys):
    _train(dirs)
    with pytest.raises(SystemExit):
        _train(dirs, lr=0.1)
    assert "already exists with a different lr" in capsys.readouterr().err
    _train(dirs, lr=0.1, overwrite=True)       # explicit: starts again


def test_preset_sets_defaults_and_explicit_flags_win(dirs):
    with flagsaver.flagsaver(preset="seed002", epochs=7):
        cfg = cnn.config_from_flags()
    assert (cfg.model, cfg.batch_size, cfg.epochs, cfg.split, cfg.val_fraction) == ("seed002", 250, 7, "ordered", 0.15)
    assert cfg.augment == ("flip", "erase")


@pytest.mark.parametrize("overrides, message", [
    (dict(batch=0), "--batch must be at least 1"),
    (dict(model="vgg"), "unknown model 'vgg'"),
    (dict(augment="blur"), "unknown augmentation"),
    (dict(batch=500), "larger than the training set"),
    (dict(epochs=0), "--epochs must be at least 1"),
    (dict(seeds=0), "--seeds must be at least 1"),
    (dict(seeds=2, split_per_seed=True, split="ordered"), "ordered split is the same for every seed"),
    (dict(dropout_scale=-1.0), "--dropout_scale must be at least 0"),
])
def test_bad_flags_exit_with_one_sentence(dirs, capsys, overrides, message):
    assert_exits_with_sentence(capsys, message, lambda: _train(dirs, **overrides))


def test_evaluate_unknown_run(dirs, capsys):
    with flagsaver.flagsaver(run="nothing", **dirs):
        with pytest.raises(SystemExit):
            evaluate.main([])
    assert "no run 'nothing'" in capsys.readouterr().err
