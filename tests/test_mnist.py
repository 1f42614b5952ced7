"""--dataset=mnist end to end on small generated MNIST-shaped IDX files: k-NN, every preset's
config, training, evaluation and analysis, with MNIST's class names; and the missing-data message."""

import dataclasses
import json

import pytest
from absl import flags

from experiments import analyze, cli, cnn, evaluate, knn
from fmnist_jax import presets
from fmnist_jax.data import datasets
from tests.conftest import assert_exits_with_sentence, make_dataset, write_dataset


@pytest.fixture
def mnist_dirs(tmp_path):
    write_dataset(tmp_path / "mnist", make_dataset(n_train=120, n_test=40, seed=7))
    return [f"--data_dir={tmp_path / 'mnist'}", f"--results_dir={tmp_path / 'results'}",
            f"--checkpoint_dir={tmp_path / 'checkpoints'}"]


@pytest.mark.parametrize("name", presets.NAMES)
def test_every_preset_takes_dataset_mnist(name):
    fv = flags.FlagValues()
    cnn.define_flags(fv)
    fv(["cnn", f"--preset={name}", "--dataset=mnist"])
    assert cnn.config_from_flags(fv) == dataclasses.replace(presets.get(name), dataset="mnist")


def test_mnist_knn_cnn_evaluate_analyze(mnist_dirs, tmp_path, capsys):
    summary = cli.invoke(knn, ["--dataset=mnist", "--k=1", "--run_name=knn_mnist", *mnist_dirs[:2]])
    assert summary["n_train"] == 120 and summary["n_eval"] == 40
    run = cli.invoke(cnn, ["--preset=demo", "--dataset=mnist", "--model=mlp", "--epochs=1", "--batch=30",
                           "--run_name=mnist_demo", *mnist_dirs])
    assert run["dataset"] == "mnist"
    capsys.readouterr()
    metrics = cli.invoke(evaluate, ["--run=mnist_demo", *mnist_dirs])
    printed = capsys.readouterr().out
    assert "Ankle boot" not in printed and list(metrics["report"]["per_class"]) == [str(i) for i in range(10)]
    found = cli.invoke(analyze, ["--run=mnist_demo", "--tsne_points=20", "--tsne_iter=250", "--feature_images=2",
                                 *mnist_dirs])
    assert list(found["per_class_accuracy"]) == [str(i) for i in range(10)] and found["dataset"] == "mnist"
    assert json.loads((tmp_path / "results" / "mnist_demo" / "config.json").read_text())["dataset"] == "mnist"


def test_missing_mnist_says_where_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(datasets.DataError) as err:
        datasets.load("mnist", source="idx")
    message = str(err.value)
    assert datasets.MNIST_URL in message and "data/mnist/" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "dataset-fashion-mnist" not in message
    assert_exits_with_sentence(capsys, datasets.MNIST_URL, cli.invoke, cnn,
                               ["--dataset=mnist", f"--data_dir={tmp_path / 'none'}", "--epochs=1"])
