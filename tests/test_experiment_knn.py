"""The k-NN experiment entry point: files written, sweep on validation, clear errors."""

import json
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import knn as knn_experiment
from tests.conftest import assert_exits_with_sentence

FLAGS = flags.FLAGS


@pytest.fixture(autouse=True)
def parsed_flags():
    if not FLAGS.is_parsed():
        FLAGS(["test"])


def test_sweep_on_validation_writes_config_and_summary(synthetic_dir, tmp_path, capsys):
    directory, _ = synthetic_dir
    with flagsaver.flagsaver(k="1,3,5", metric="l1", data_dir=str(directory), val_fraction=0.25,
                             results_dir=str(tmp_path / "results"), run_name="sweep"):
        knn_experiment.main([])
    out = tmp_path / "results" / "sweep"
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["ks"] == [1, 3, 5] and config["metric"] == "l1"
    assert set(summary["accuracy"]) == {"1", "3", "5"}
    assert summary["evaluated_on"] == "validation" and summary["n_eval"] == 30
    assert summary["accuracy"]["1"] > 0.8  # the synthetic classes are well separated
    assert summary["environment"]["backend"] == "cpu"
    assert "validation accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("overrides, message", [
    (dict(k="0"), "--k must be at least 1"),
    (dict(k="500"), "larger than the training set"),
    (dict(k="five"), "comma list of integers"),
    (dict(val_fraction=1.5), "--val_fraction must be in"),
])
def test_bad_flags_exit_with_one_sentence(synthetic_dir, tmp_path, capsys, overrides, message):
    directory, _ = synthetic_dir
    with flagsaver.flagsaver(data_dir=str(directory), results_dir=str(tmp_path), **overrides):
        assert_exits_with_sentence(capsys, message, knn_experiment.main, [])


def test_cli_reports_missing_data_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.knn", f"--data_dir={tmp_path}/nothing",
         f"--results_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "apt-get install dataset-fashion-mnist" in result.stderr
    result = subprocess.run([sys.executable, "-m", "experiments.knn", "--metric=cosine"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
