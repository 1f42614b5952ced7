"""One run across two real processes on this machine (jax.distributed, gloo on 127.0.0.1): the same
results as one process on the same global batch, a killed pair resumes bit-identically, and a
process that dies makes the other stop with one sentence instead of hanging."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--noprogress", "--model=mlp", "--batch=30", "--val_fraction=0.25", "--split=stratified", "--augment=flip"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(dirs, name, epochs, processes, extra=()):
    """The processes of one run (one process when `processes` is 1), started; their Popen objects."""
    common = [sys.executable, "-m", "experiments.cnn", *FLAGS, *dirs, f"--run_name={name}", f"--epochs={epochs}",
              *extra]
    if processes == 1:
        return [subprocess.Popen(common, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    port = _free_port()
    return [subprocess.Popen([*common, f"--num_processes={processes}", f"--process_id={i}",
                              f"--coordinator=127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(processes)]


def _wait(procs, timeout=240):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


def _rows(results, name):
    rows = [json.loads(line) for line in (results / name / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    from tests.conftest import make_dataset, write_dataset
    root = tmp_path_factory.mktemp("multihost")
    write_dataset(root / "idx", make_dataset())
    dirs = [f"--data_dir={root / 'idx'}", f"--results_dir={root / 'results'}", f"--checkpoint_dir={root / 'ck'}"]
    _wait(_start(dirs, "two", 3, 2))
    return root, dirs


def test_two_processes_train_as_one_on_the_same_global_batch(two_process_run):
    root, dirs = two_process_run
    _wait(_start(dirs, "one", 3, 1))
    results = root / "results"
    two, one = json.loads((results / "two" / "summary.json").read_text()), json.loads((results / "one" / "summary.json").read_text())
    assert two["devices"] == "2 cpu devices: 1 member groups x 2 data shards" and one["devices"] == "1 cpu device"
    a, b = _rows(results, "two"), _rows(results, "one")
    assert [r["epoch"] for r in a] == [1, 2, 3]
    for x, y in zip(a, b):                     # the same run, to float rounding (a sharded batch sums in another order)
        np.testing.assert_allclose([x["train_loss"], x["val_loss"]], [y["train_loss"], y["val_loss"]], rtol=1e-5)
        assert x["val_accuracy"] == pytest.approx(y["val_accuracy"], abs=1e-6)
    np.testing.assert_allclose(two["test"]["best"]["member_loss"], one["test"]["best"]["member_loss"], rtol=1e-5)
    # Only process 0 wrote the run's files: one metrics row an epoch, one TensorBoard file of epochs.
    assert len((results / "two" / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_killed_pair_resumes_bit_identically(two_process_run):
    root, dirs = two_process_run
    results = root / "results"
    procs = _start(dirs, "killed", 3, 2)
    deadline = time.time() + 180
    while not (root / "ck" / "killed" / "1").exists():      # Orbax publishes epoch 1 by a rename
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    _wait(_start(dirs, "killed", 3, 2))
    assert _rows(results, "killed") == _rows(results, "two")
    killed = json.loads((results / "killed" / "summary.json").read_text())
    assert killed["test"] == json.loads((results / "two" / "summary.json").read_text())["test"]
    assert killed["started_at_epoch"] >= 1


def test_a_dying_process_stops_the_other_with_one_sentence(two_process_run):
    root, dirs = two_process_run
    procs = _start(dirs, "dies", 300, 2, extra=["--heartbeat_timeout=5", "--batch=4"])
    metrics = root / "results" / "dies" / "metrics.jsonl"
    deadline = time.time() + 180
    while not metrics.exists() or not metrics.read_text():
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    started = time.time()
    _, err = procs[0].communicate(timeout=120)
    assert time.time() - started < 60 and procs[0].returncode == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: process 0 of this 2-process run lost another process") and "resume" in last
    procs[1].wait()
