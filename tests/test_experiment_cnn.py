"""experiments.cnn and experiments.evaluate end to end on synthetic data."""

import json

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import cnn, evaluate

FLAGS = flags.FLAGS


@pytest.fixture(autouse=True)
def parsed_flags():
    if not FLAGS.is_parsed():
        FLAGS(["test"])


@pytest.fixture
def dirs(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    return dict(data_dir=str(directory), results_dir=str(tmp_path / "results"),
                checkpoint_dir=str(tmp_path / "checkpoints"))


def _train(dirs, **overrides):
    settings = dict(model="seed003", epochs=1, batch=30, augment="flip,erase", run_name="smoke",
                    val_fraction=0.25, split="stratified") | dirs | overrides
    with flagsaver.flagsaver(**settings):
        cnn.main([])


def test_train_resume_and_evaluate(dirs, tmp_path, capsys):
    _train(dirs)
    out = tmp_path / "results" / "smoke"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1
    assert 0.0 <= summary["test_accuracy_best"] <= 1.0 and summary["parameters"] == 493_902
    assert summary["conv_impl"] == "matmul"
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
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (ev / png).stat().st_size > 0


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
])
def test_bad_flags_exit_with_one_sentence(dirs, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_info:
        _train(dirs, **overrides)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_evaluate_unknown_run(dirs, capsys):
    with flagsaver.flagsaver(run="nothing", **dirs):
        with pytest.raises(SystemExit):
            evaluate.main([])
    assert "no run 'nothing'" in capsys.readouterr().err
