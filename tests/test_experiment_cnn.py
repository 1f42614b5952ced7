"""experiments.cnn and experiments.evaluate end to end on synthetic data, as a user runs them."""

import dataclasses
import json

import pytest

from experiments import cli, cnn, evaluate
from tests.conftest import assert_exits_with_sentence

SMOKE = ["--noprogress", "--model=seed003", "--epochs=1", "--batch=30", "--augment=flip,erase", "--run_name=smoke",
         "--val_fraction=0.25", "--split=stratified"]


def _train(dirs, *flags):
    return cli.invoke(cnn, [*SMOKE, *dirs, *flags])


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_train_resume_and_evaluate(dirs, tmp_path, capsys):
    _train(dirs)
    out = tmp_path / "results" / "smoke"
    summary = _summary(out)
    assert summary["epochs"] == 1 and summary["best_epoch"] == [1]
    assert 0.0 <= summary["test_accuracy_best"] <= 1.0 and summary["parameters"] == 493_902
    # A run of one member: its accuracy is the mean and the ensemble's, with no spread.
    best = summary["test"]["best"]
    assert best["member_accuracy"] == [summary["test_accuracy_best"]] == [best["ensemble_accuracy"]]
    assert best["std_accuracy"] == 0.0
    assert summary["conv_impl"] == "winograd"
    assert json.loads((out / "config.json").read_text())["conv_impl"] == "auto"
    assert (out / "history.png").stat().st_size > 0
    # The same command with more epochs resumes from epoch 1 instead of starting over.
    _train(dirs, "--epochs=2")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert _summary(out)["epochs"] == 2
    capsys.readouterr()

    metrics = cli.invoke(evaluate, ["--run=smoke", "--which=best", "--tta", *dirs])
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "Ankle boot" in printed
    ev = out / "eval_best_tta"
    assert json.loads((ev / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    report = json.loads((ev / "classification_report.json").read_text())
    assert metrics["n_test"] == 40 and len(report["per_class"]) == 10
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["test_accuracy"] == pytest.approx(_summary(out)["test_accuracy_best_tta"])
    assert metrics["conv_impl"] == "winograd"
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (ev / png).stat().st_size > 0
    # --conv_impl and --eval_batch are honoured: another implementation, the same predictions.
    other = cli.invoke(evaluate, ["--run=smoke", "--tta", "--conv_impl=matmul", "--eval_batch=7", *dirs])
    assert other["conv_impl"] == "matmul" and other["eval_batch"] == 7
    assert other["test_accuracy"] == metrics["test_accuracy"]
    assert other["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)


def test_ensemble_run_reports_members_mean_std_and_vote_and_evaluates(dirs, tmp_path, capsys):
    # The mlp: what is checked here is the reporting over members (the CNN runs in the test above).
    _train(dirs, "--model=mlp", "--seeds=3", "--split_per_seed", "--split=random", "--run_name=ens", "--epochs=2")
    out = tmp_path / "results" / "ens"
    summary = _summary(out)
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

    metrics = cli.invoke(evaluate, ["--run=ens", *dirs])
    assert metrics["test_accuracy"] == pytest.approx(best["ensemble_accuracy"])
    assert metrics["members"]["member_accuracy"] == pytest.approx(best["member_accuracy"])
    assert "ensemble" in capsys.readouterr().out
    metrics = cli.invoke(evaluate, ["--run=ens", "--which=latest", "--member=2", *dirs])
    assert (out / "eval_latest_member2" / "metrics.json").exists()
    assert metrics["test_accuracy"] == pytest.approx(summary["test"]["final"]["member_accuracy"][2])
    assert_exits_with_sentence(capsys, "--member must be in 0..2", cli.invoke, evaluate,
                               ["--run=ens", "--member=3", *dirs])


def test_changed_config_does_not_silently_resume(dirs, capsys):
    _train(dirs)
    assert_exits_with_sentence(capsys, "already exists with a different lr", _train, dirs, "--lr=0.1")
    _train(dirs, "--lr=0.1", "--overwrite")       # explicit: starts again


def test_a_preset_sets_defaults_and_explicit_flags_win():
    from absl import flags

    from fmnist_jax import presets
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    fv(["cnn", "--preset=seed003", "--epochs=7", "--seeds=2"])
    cfg = cnn.config_from_flags(fv)
    assert cfg == dataclasses.replace(presets.get("seed003"), epochs=7, seeds=2)
    assert (cfg.model, cfg.batch, cfg.split, cfg.val_fraction, cfg.data_seed) == ("seed003", 250, "random", 0.2, 42)


def test_train_config_defaults_are_the_command_line_defaults():
    from absl import flags

    from fmnist_jax.config import TrainConfig
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    fv(["cnn"])
    assert cnn.config_from_flags(fv) == TrainConfig()


def test_data_errors_and_unexpected_arguments_are_one_sentence(dirs, tmp_path, capsys):
    assert_exits_with_sentence(capsys, "apt-get install dataset-fashion-mnist", _train, dirs,
                               f"--data_dir={tmp_path / 'nothing'}")
    assert_exits_with_sentence(capsys, "unexpected argument 'seed003'", _train, dirs, "seed003")
