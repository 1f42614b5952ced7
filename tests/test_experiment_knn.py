"""The k-NN experiment entry point: files written, sweep on validation, the real command line."""

import json
import subprocess
import sys

from experiments import cli
from experiments import knn as knn_experiment


def test_sweep_on_validation_writes_config_and_summary(synthetic_dir, tmp_path, capsys):
    directory, _ = synthetic_dir
    cli.invoke(knn_experiment, ["--k=1,3,5", "--metric=l1", f"--data_dir={directory}", "--val_fraction=0.25",
                                f"--results_dir={tmp_path / 'results'}", "--run_name=sweep"])
    out = tmp_path / "results" / "sweep"
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["k"] == [1, 3, 5] and config["metric"] == "l1"
    assert set(summary["accuracy"]) == {"1", "3", "5"}
    assert summary["evaluated_on"] == "validation" and summary["n_eval"] == 30
    assert summary["accuracy"]["1"] > 0.8  # the synthetic classes are well separated
    assert summary["environment"]["backend"] == "cpu"
    assert "validation accuracy" in capsys.readouterr().out


def test_cli_reports_bad_input_without_traceback(tmp_path):
    # The real command line (absl's app.run): missing data (an error in main) and a bad flag
    # value (an error while parsing). Every other bad flag takes one of these two paths; they are
    # checked in-process by test_cli's table.
    for argv, fragment in [([f"--data_dir={tmp_path}/nothing", f"--results_dir={tmp_path}"],
                            "apt-get install dataset-fashion-mnist"),
                           (["--k=five"], "--k must be a comma list of integers")]:
        result = subprocess.run([sys.executable, "-m", "experiments.knn", *argv],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert fragment in result.stderr


def test_cli_success_exits_zero_and_prints_only_the_report(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    result = subprocess.run([sys.executable, "-m", "experiments.knn", "--k=1", f"--data_dir={directory}",
                             f"--results_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "{" not in result.stderr   # main's result is not echoed
