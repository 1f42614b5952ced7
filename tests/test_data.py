"""The data layer: IDX parsing, validation errors, search order, checksums, splits."""

import gzip

import numpy as np
import pytest

from fmnist_jax.data import datasets
from tests.conftest import make_dataset, write_dataset


def test_load_roundtrips_gzipped_and_plain_idx(tmp_path):
    ds = make_dataset()
    for gz in (True, False):
        write_dataset(tmp_path / str(gz), ds, gz=gz)
        loaded = datasets.load(data_dir=tmp_path / str(gz), source="idx")
        for a, b in zip(loaded, ds):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == np.uint8


def test_env_var_and_local_data_dir_are_searched(tmp_path, monkeypatch):
    ds = make_dataset(seed=3)
    write_dataset(tmp_path / "env", ds)
    monkeypatch.setenv("FMNIST_DATA_DIR", str(tmp_path / "env"))
    np.testing.assert_array_equal(datasets.load(source="idx").y_test, ds.y_test)
    monkeypatch.delenv("FMNIST_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "data" / "mnist", ds)
    np.testing.assert_array_equal(datasets.load("mnist", source="idx").x_train, ds.x_train)


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic number"),
    (lambda b: b[:-5], "declares shape"),
    (lambda b: b[:2], "too short"),
])
def test_corrupt_idx_raises_one_clear_sentence(synthetic_dir, corrupt, message):
    directory, _ = synthetic_dir
    path = directory / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(corrupt(payload)))
    with pytest.raises(datasets.DataError, match=message) as err:
        datasets.load(data_dir=directory, source="idx")
    assert str(path) in str(err.value)


def test_truncated_gzip_is_reported(synthetic_dir):
    directory, _ = synthetic_dir
    path = directory / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(datasets.DataError, match="gzip stream is truncated or corrupt"):
        datasets.load(data_dir=directory, source="idx")


def test_count_mismatch_and_bad_labels(tmp_path):
    ds = make_dataset()
    write_dataset(tmp_path / "a", ds._replace(y_train=ds.y_train[:-1]))
    with pytest.raises(datasets.DataError, match="120 train images but 119 train labels"):
        datasets.load(data_dir=tmp_path / "a", source="idx")
    bad = ds.y_test.copy()
    bad[3] = 12
    write_dataset(tmp_path / "b", ds._replace(y_test=bad))
    with pytest.raises(datasets.DataError, match="outside 0..9"):
        datasets.load(data_dir=tmp_path / "b", source="idx")


def test_missing_file_and_missing_data(tmp_path, synthetic_dir):
    directory, _ = synthetic_dir
    (directory / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(datasets.DataError, match="t10k-images-idx3-ubyte.*missing"):
        datasets.load(data_dir=directory, source="idx")
    with pytest.raises(datasets.DataError, match="apt-get install dataset-fashion-mnist"):
        datasets.load(data_dir=tmp_path / "empty", source="idx")


def test_checksum_is_verified_when_asked(synthetic_dir):
    directory, _ = synthetic_dir
    with pytest.raises(datasets.DataError, match="sha256"):
        datasets.load(data_dir=directory, source="idx", verify=True)


def test_unknown_dataset_and_source():
    with pytest.raises(datasets.DataError, match="unknown dataset"):
        datasets.load("cifar10")
    with pytest.raises(datasets.DataError, match="unknown source"):
        datasets.load(source="http")


def test_split_is_a_pure_function_of_seed_and_fraction():
    y = np.repeat(np.arange(10), 50)
    tr, va = datasets.train_val_split(y, 0.2, seed=1)
    tr2, va2 = datasets.train_val_split(y, 0.2, seed=1)
    np.testing.assert_array_equal(va, va2)
    assert len(va) == 100 and len(tr) == 400
    assert not set(tr) & set(va)
    assert not np.array_equal(va, datasets.train_val_split(y, 0.2, seed=2)[1])


def test_stratified_and_ordered_splits():
    y = np.repeat(np.arange(10), 60)
    _, va = datasets.train_val_split(y, 0.15, seed=0, stratify=True)
    assert np.all(np.bincount(y[va], minlength=10) == 9)
    tr, va = datasets.train_val_split(y, 0.15, shuffle=False)
    np.testing.assert_array_equal(tr, np.arange(510))  # seed 002: the first 85% train
    with pytest.raises(ValueError):
        datasets.train_val_split(y, 1.0)


def test_real_fashion_mnist_matches_the_published_facts(real_data):
    x_train, y_train, x_test, y_test = real_data
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert list(y_train[:10]) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert list(y_test[:10]) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert np.all(np.bincount(y_train) == 6000)
