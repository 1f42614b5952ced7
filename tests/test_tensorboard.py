"""TensorBoard without TensorFlow: a run's event files hold its metrics.jsonl and its figures."""

import json

import numpy as np
import pytest

from fmnist_jax.config import TrainConfig
from fmnist_jax.runs import run_dir, tensorboard
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.training import train


def test_crc32c_is_castagnoli():
    assert tensorboard.crc32c(b"123456789") == 0xE3069283        # the standard check value
    assert tensorboard.crc32c(b"") == 0


def test_a_run_s_events_are_its_metrics_and_figures(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    cfg = TrainConfig(model="mlp", epochs=2, batch=30, seeds=2, val_fraction=0.25, split="stratified", augment=())
    paths = RunPaths("tb", tmp_path / "results", tmp_path / "checkpoints")
    train.train_and_evaluate(cfg, paths, data_dir=directory)
    files = sorted((paths.results / "tensorboard").glob("events.out.tfevents.*"))
    events = [e for f in files for e in tensorboard.read_events(f)]
    rows = [json.loads(line) for line in (paths.results / "metrics.jsonl").read_text().splitlines()]
    by_step = {e["step"]: e["scalars"] for e in events if e["scalars"]}
    assert sorted(by_step) == [1, 2]
    for row in rows:
        scalars = by_step[row["epoch"]]
        want = run_dir.epoch_scalars(row)
        assert set(scalars) == set(want) and "member1/val_accuracy" in scalars
        np.testing.assert_allclose([scalars[k] for k in sorted(want)], [want[k] for k in sorted(want)], rtol=1e-6)
    images = {tag: image for e in events for tag, image in e["images"].items()}
    assert set(images) == {"confusion_matrix", "history"}
    height, width, png = images["history"]
    assert png == (paths.results / "history.png").read_bytes() and height > 100 and width > 100


def test_a_damaged_event_file_is_detected(tmp_path):
    writer = tensorboard.EventWriter(tmp_path)
    writer.scalars(3, {"loss": 0.5})
    assert tensorboard.read_events(writer.path)[-1]["scalars"] == {"loss": 0.5}
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF
    writer.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC is wrong"):
        tensorboard.read_events(writer.path)
