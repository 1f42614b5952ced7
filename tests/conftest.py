"""Shared fixtures: small synthetic IDX datasets, and the real data when it is installed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

# JAX's persistent compilation cache, shared by every test and the subprocesses they start (set
# before jax is imported): the many small runs of the suite compile the same programs again and
# again, and a cached executable is the same code, so results do not change. Kept between
# `make test` runs in .pytest_cache/.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Most of the suite's time is XLA compiling many small programs that then run for milliseconds,
# so the suite compiles for compilation speed: LLVM's optimisation level 0 (test_train +
# test_trainer: 344 to 171 CPU seconds) and XLA CPU's older fusion emitters, which skip the MLIR
# pipeline of the new ones (test_train + test_trainer + test_speedrun: 136 to 94 s; the whole
# suite on 2 cores: 344 to 250 s). Neither uses fast-math: values agree with optimised code to
# float rounding, and every comparison in the suite is between programs compiled the same way.
# Compute-heavy tests must stay small: the code runs up to 8x slower (an L1 k-NN search).
# Set XLA_FLAGS yourself to test the code as it is compiled in use.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fmnist_jax.data import datasets  # noqa: E402
from fmnist_jax.training import loop  # noqa: E402
from fmnist_jax.training import programs as programs_lib  # noqa: E402


def make_dataset(n_train=120, n_test=40, seed=0) -> datasets.Dataset:
    """Class-dependent synthetic 28x28 uint8 images: learnable, and k-NN separable."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28))

    def draw(n):
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.integers(-60, 61, size=(n, 28, 28))
        x = np.clip(templates[y] + noise, 0, 255).astype(np.uint8)
        return x, y

    return datasets.Dataset(*draw(n_train), *draw(n_test))


def write_dataset(directory, ds: datasets.Dataset, gz=True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in datasets.FILES.items():
        datasets.write_idx(directory / (stem + (".gz" if gz else "")), getattr(ds, key))


@pytest.fixture
def synthetic_dir(tmp_path):
    """A folder of valid gzipped IDX files and the arrays written into it."""
    ds = make_dataset()
    write_dataset(tmp_path / "idx", ds)
    return tmp_path / "idx", ds


@pytest.fixture
def dirs(synthetic_dir, tmp_path):
    """Flags pointing an experiment script at synthetic data and temporary output folders."""
    directory, _ = synthetic_dir
    return [f"--data_dir={directory}", f"--results_dir={tmp_path / 'results'}",
            f"--checkpoint_dir={tmp_path / 'checkpoints'}"]


def assert_exits_with_sentence(capsys, message: str, run, *args) -> None:
    """run(*args) exits with status 2 and one line on stderr containing `message`."""
    with pytest.raises(SystemExit) as exit_info:
        run(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.fixture(scope="session")
def real_data():
    """The real Fashion-MNIST, or a skip where it is not installed (`make data` installs it)."""
    try:
        return datasets.load("fashion_mnist", source="idx")
    except datasets.DataError as e:
        pytest.skip(f"real Fashion-MNIST not installed: {e}")


@pytest.fixture(scope="session")
def mlp_ensemble(tmp_path_factory):
    """A trained run of two small `mlp` members on synthetic data (shared by the analysis,
    prediction and export tests): (flags pointing at it, the dataset, the results folder)."""
    from experiments import cli, cnn
    root = tmp_path_factory.mktemp("mlp_ensemble")
    ds = make_dataset(n_train=200, n_test=60, seed=1)
    write_dataset(root / "idx", ds)
    flags = [f"--data_dir={root / 'idx'}", f"--results_dir={root / 'results'}",
             f"--checkpoint_dir={root / 'checkpoints'}"]
    cli.invoke(cnn, ["--model=mlp", "--epochs=1", "--batch=40", "--seeds=2", "--run_name=mlp2",
                     "--val_fraction=0.2", "--augment=none", *flags])
    return flags, ds, root / "results" / "mlp2"


class Placed(NamedTuple):
    """A run on data in memory, as the tests drive it: ``loop.init(*t)``, ``loop.epochs(*t, state)``."""
    setup: loop.RunSetup
    programs: programs_lib.Programs


def placed(cfg, x, y, train_idx, val_idx, members=None, devices=None) -> Placed:
    """`loop.RunSetup.place` and the setup's programs, together."""
    setup = loop.RunSetup.place(cfg, x, y, train_idx, val_idx, members, devices)
    return Placed(setup, setup.programs())
