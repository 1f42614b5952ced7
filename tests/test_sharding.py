"""Several devices: the member axis (and the batch) sharded across 4 forced CPU devices gives the
one-device results, and the arrays really are split."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from fmnist_jax import sharding

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def four_device_report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "tests.sharded_run", "4", "1", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_same_training(r):
    # Sharding reorders float sums (the data shards' batch-norm statistics and gradients are
    # all-reduced), nothing else: measured gaps are ~1e-7 while training moved the weights ~3e-2.
    assert r["param_change"] > 1e-2
    assert r["max_gap"] < 1e-3 and r["val_gap"] == 0


def test_four_members_one_per_device(four_device_report):
    r = four_device_report["4"]
    assert four_device_report["devices"] == 4
    assert r["mesh"] == {"members": 4, "data": 1} and r["sharded_over_members"]
    assert r["devices_holding_a_kernel"] == 4 and r["shard_shape"][0] == 1   # one member per device
    _assert_same_training(r)


def test_one_member_shards_its_batch(four_device_report):
    r = four_device_report["1"]
    assert r["mesh"] == {"members": 1, "data": 4} and "4 data shards" in r["describe"]
    _assert_same_training(r)


def test_two_members_on_four_devices_do_both(four_device_report):
    r = four_device_report["2"]
    assert r["mesh"] == {"members": 2, "data": 2} and r["shard_shape"][0] == 1
    _assert_same_training(r)


def test_mesh_shapes_divide_members_and_batch(four_device_report):
    meshes = four_device_report["meshes"]            # "members x batch" on 4 devices
    assert meshes["5x250"] == {"members": 1, "data": 2}    # 2 of 4 devices: 250 = 2 x 125
    assert meshes["8x250"] == {"members": 4, "data": 1}
    assert meshes["6x32"] == {"members": 2, "data": 2}
    assert meshes["3x7"] == {"members": 1, "data": 1}
    one = sharding.make_mesh(5, 250, jax.devices()[:1])
    assert dict(one.shape) == {"members": 1, "data": 1} and sharding.describe(one) == "1 cpu device"
