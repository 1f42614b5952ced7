"""Fashion-MNIST / MNIST loading, validation and seeded splits.

`load` returns four uint8 numpy arrays ``(x_train [N,28,28], y_train [N], x_test, y_test)``.
Sources:

* ``idx``: the four canonical ``*-idx?-ubyte`` files (gzipped or not), looked up in
  ``data_dir``, else ``$FMNIST_DATA_DIR``, else ``./data/<dataset>``, else (Fashion-MNIST only)
  ``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist`` package.
* ``tfds``: ``tensorflow_datasets`` (building the dataset needs the ``tfds`` extra). TFDS
  shuffles the examples, so its order differs from the IDX order.
* ``auto``: ``idx``, then a copy TFDS has already prepared (never a download), then a
  `DataError` that lists the ways to get the data.

Every problem with the files is a `DataError` whose message is one sentence naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fmnist_jax.errors import UserError

log = logging.getLogger(__name__)

DATASETS = ("fashion_mnist", "mnist")
SOURCES = ("auto", "idx", "tfds")
NUM_CLASSES = 10
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# sha256 of the *decompressed* upstream Fashion-MNIST files. The .gz sums that TFDS registers
# do not match Debian's files (only the gzip header differs), so the payloads are checked instead.
FASHION_MNIST_SHA256 = {
    "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CANONICAL_COUNTS = {"x_train": 60000, "y_train": 60000, "x_test": 10000, "y_test": 10000}

_IDX_DTYPES = {0x08: np.uint8}


class DataError(UserError):
    """The data is missing, unreadable or not what it claims to be."""


class Dataset(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror}).") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: the gzip stream is truncated or corrupt ({e}).") from e
    return raw


def parse_idx(payload: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parses an IDX byte string into a numpy array, checking the header against the payload."""
    if len(payload) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(payload)} bytes).")
    zero0, zero1, dtype_code, ndim = payload[:4]
    if zero0 != 0 or zero1 != 0 or dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 3:
        raise DataError(f"{name}: bad IDX magic number {payload[:4].hex()} "
                        "(expected 00000801 for labels or 00000803 for images).")
    header_len = 4 + 4 * ndim
    if len(payload) < header_len:
        raise DataError(f"{name}: the IDX header is truncated.")
    shape = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header_len
    if len(payload) != expected:
        raise DataError(f"{name}: the header declares shape {shape} ({expected} bytes) "
                        f"but the file holds {len(payload)} bytes.")
    return np.frombuffer(payload, dtype=_IDX_DTYPES[dtype_code], offset=header_len).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (gzipped or not) into a uint8 array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def candidate_dirs(dataset: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories searched for IDX files, in order. An explicit `data_dir` is the only one."""
    if data_dir is not None:
        return [Path(data_dir)]
    if os.environ.get("FMNIST_DATA_DIR"):
        return [Path(os.environ["FMNIST_DATA_DIR"])]
    dirs = [Path("data") / dataset]
    if dataset == "fashion_mnist":
        dirs.append(DEBIAN_DIR)
    return dirs


def _validate(ds: Dataset, origin: str) -> Dataset:
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{origin}: {split} images have shape {x.shape}, expected [N, 28, 28].")
        if y.ndim != 1:
            raise DataError(f"{origin}: {split} labels have shape {y.shape}, expected [N].")
        if len(x) != len(y):
            raise DataError(f"{origin}: {len(x)} {split} images but {len(y)} {split} labels.")
        if len(y) and int(y.max()) >= NUM_CLASSES:
            raise DataError(f"{origin}: {split} labels hold {int(y.max())}, outside 0..9.")
    return ds


def _load_idx(dataset: str, directory: Path, verify: bool | None) -> Dataset:
    arrays = {}
    for key, stem in FILES.items():
        path = _find_file(directory, stem)
        if path is None:
            raise DataError(f"{directory}: {stem}[.gz] is missing.")
        payload = _read_bytes(path)
        canonical = dataset == "fashion_mnist" and (
            verify or (verify is None and len(payload) in _canonical_sizes()))
        if canonical:
            digest = hashlib.sha256(payload).hexdigest()
            if digest != FASHION_MNIST_SHA256[key]:
                raise DataError(f"{path}: sha256 {digest[:12]}... does not match the published "
                                "Fashion-MNIST file; the file is corrupt or not Fashion-MNIST.")
        elif dataset == "mnist" and len(payload) in _canonical_sizes() and \
                hashlib.sha256(payload).hexdigest() == FASHION_MNIST_SHA256[key]:
            raise DataError(f"{path}: this is Fashion-MNIST, not MNIST; point --data_dir (or "
                            "FMNIST_DATA_DIR) at MNIST's files for --dataset=mnist.")
        arrays[key] = parse_idx(payload, str(path))
    ds = _validate(Dataset(**arrays), str(directory))
    log.info("loaded %s from %s: %d train, %d test", dataset, directory,
             len(ds.y_train), len(ds.y_test))
    return ds


def _canonical_sizes() -> set[int]:
    return {60000 * 784 + 16, 10000 * 784 + 16, 60000 + 8, 10000 + 8}


def _load_tfds(dataset: str, data_dir: str | os.PathLike | None, download: bool) -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError("tensorflow_datasets is not installed (pip install -e '.[tfds]').") from e
    try:
        train, test = tfds.load(dataset, split=["train", "test"], batch_size=-1,
                                as_supervised=True, data_dir=data_dir, download=download)
        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
    except Exception as e:  # TFDS raises many types (download, missing TensorFlow, ...)
        raise DataError(f"tensorflow_datasets could not load {dataset}: {e}".rstrip(".") + ".") from e
    ds = Dataset(np.asarray(x_train, np.uint8).reshape(-1, 28, 28), np.asarray(y_train, np.uint8),
                 np.asarray(x_test, np.uint8).reshape(-1, 28, 28), np.asarray(y_test, np.uint8))
    return _validate(ds, f"tfds:{dataset}")


def load(dataset: str = "fashion_mnist", data_dir: str | os.PathLike | None = None,
         source: str = "auto", verify: bool | None = None) -> Dataset:
    """Loads a dataset as uint8 numpy arrays ``(x_train, y_train, x_test, y_test)``.

    Args:
      dataset: "fashion_mnist" or "mnist".
      data_dir: directory of the IDX files (or TFDS's data_dir for source="tfds").
      source: "idx", "tfds" or "auto" (idx first, then tfds).
      verify: check the sha256 of the decompressed Fashion-MNIST payloads; None checks
        whenever the files have the canonical sizes (so small synthetic files are not checked).
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}.")
    problems = []
    if source in ("idx", "auto"):
        for directory in candidate_dirs(dataset, data_dir):
            if directory.is_dir() and any(_find_file(directory, s) for s in FILES.values()):
                return _load_idx(dataset, directory, verify)  # partial sets raise, never skip
            problems.append(f"no IDX files in {directory}")
        if source == "idx":
            raise DataError(f"{dataset}: {'; '.join(problems)}. {_how_to_get(dataset)}")
    try:
        # "auto" only reads a copy TFDS has already prepared; downloading is asked for explicitly.
        return _load_tfds(dataset, data_dir if source == "tfds" else None, download=source == "tfds")
    except DataError:
        if source == "tfds":
            raise
        problems.append("no prepared tensorflow_datasets copy")
    raise DataError(f"{dataset} not found ({'; '.join(problems)}). {_how_to_get(dataset)}")


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _how_to_get(dataset: str) -> str:
    if dataset == "mnist":
        return ("MNIST is not in Debian's archive: download train-images-idx3-ubyte.gz, "
                "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
                f"from {MNIST_URL} (a mirror of yann.lecun.com/exdb/mnist) into data/mnist/ "
                "(or pass --data_dir / set FMNIST_DATA_DIR to their folder), or "
                "`pip install -e '.[tfds]'` and use --source=tfds with internet access.")
    return ("Get it one of three ways: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            f"put the four IDX files in data/{dataset}/ (or pass --data_dir / set FMNIST_DATA_DIR), "
            "or `pip install -e '.[tfds]'` and use --source=tfds with internet access.")


def train_val_split(labels: np.ndarray, val_fraction: float, seed: int = 0, *,
                    shuffle: bool = True, stratify: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, val_idx)``: a pure function of (labels, fraction, seed, options).

    Args:
      labels: [N] integer labels (used for stratification and N).
      val_fraction: share of examples held out, in [0, 1).
      seed: numpy PCG64 seed; the same seed gives the same split on every machine.
      shuffle: False takes the last `val_fraction` as validation (seed 002's "first 85%" split).
      stratify: keep the class proportions equal in both parts (implies shuffling within class).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if not shuffle:
        n_val = int(round(n * val_fraction))
        idx = np.arange(n)
        return idx[: n - n_val], idx[n - n_val:]
    rng = np.random.Generator(np.random.PCG64(seed))
    if not stratify:
        perm = rng.permutation(n)
        n_val = int(round(n * val_fraction))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    train_parts, val_parts = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(members) * val_fraction))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Writes a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
