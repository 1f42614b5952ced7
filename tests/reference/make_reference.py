"""Writes tests/reference/tiny_runs_<machine>.json: the outputs of two tiny runs, the committed reference
that tests/test_reference.py holds later code to.

    python tests/reference/make_reference.py OUT.json

It runs whichever library is importable: the file was first written by this script at commit
2991906 (before the training core was rewritten into fmnist_jax/training/), whose entry point
was `fmnist_jax.run.train_and_evaluate`, and the rewrite reproduced it bit for bit. It was
re-recorded on 2026-12-02 (Zen 3 AMD EPYC, jax 0.10.2) when library drift had changed the
speedrun_small run even at the commit that first recorded it; it now also records the
library versions, and the test asks for the same bits only where they match. Since 2026-12-03 it
records the CPU's x86 family/model too: a Zen 4 and a Zen 5 (both "AMD EPYC" with AVX-512) did
not reproduce each other's bits. Each file under tests/reference/ is one machine's record.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

# Compiled as the test suite compiles (tests/conftest.py), so that the test can ask for the same bits.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path.cwd()))

try:  # noqa: E402                                # the library as it is now
    from fmnist_jax.config import TrainConfig
    from fmnist_jax.data import datasets
    from fmnist_jax.runs.files import RunPaths
    from fmnist_jax.training.train import train_and_evaluate
except ImportError:                              # before the rewrite (commit 2991906)
    from fmnist_jax import data as datasets
    from fmnist_jax.config import TrainConfig
    from fmnist_jax.run import train_and_evaluate
    from fmnist_jax.run_files import RunPaths

# Two members on their own splits with an optimizer chain (bias lr, EMA) and erasing; and the
# speedrun net (data-initialised whitening, alternating flips, translations), under its former name.
CONFIGS = {
    "mlp_two_members": dict(model="mlp", epochs=2, batch=30, seeds=2, split="stratified", split_per_seed=True,
                            val_fraction=0.25, augment=("flip", "erase"), optimizer="sgd", lr=0.05,
                            schedule="onecycle", bias_lr_scale=4.0, ema_decay=0.9, seed=3),
    "speedrun_small": dict(model="speedrun_small", epochs=1, batch=30, val_fraction=0.25, split="random",
                           augment=("alt_flip", "translate"), optimizer="sgd", lr=0.05, schedule="onecycle",
                           tta="flip_shift", seed=1),
}


def synthetic(n_train=120, n_test=40, seed=0):
    """tests.conftest.make_dataset's images, rebuilt here so that the script needs no test code."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28))

    def draw(n):
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.integers(-60, 61, size=(n, 28, 28))
        return np.clip(templates[y] + noise, 0, 255).astype(np.uint8), y

    return (*draw(n_train), *draw(n_test))


def outputs(root: Path) -> dict:
    idx = root / "idx"
    idx.mkdir(parents=True)
    for (key, stem), array in zip(datasets.FILES.items(), synthetic()):
        datasets.write_idx(idx / (stem + ".gz"), array)
    result = {}
    for name, fields in CONFIGS.items():
        paths = RunPaths(name, root / "results", root / "checkpoints")
        summary = train_and_evaluate(TrainConfig(**fields), paths, data_dir=idx)
        rows = [json.loads(line) for line in (paths.results / "metrics.jsonl").read_text().splitlines()]
        probabilities = np.load(paths.results / "test_probabilities.npz")
        result[name] = {
            "history": [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows],
            "best_epoch": summary["best_epoch"], "best_val_accuracy": summary["best_val_accuracy"],
            "test": summary["test"], "parameters": summary["parameters"],
            "probabilities_sha256": {k: hashlib.sha256(probabilities[k].tobytes()).hexdigest()
                                     for k in sorted(probabilities.files)},
            "environment": {**{k: summary["environment"][k]
                               for k in ("cpu_model", "cpu_family_model", "jax", "platform")},
                            "avx512": has_avx512(), "libraries": library_versions()},
        }
    return result


def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (XLA then vectorises, hence rounds, differently)."""
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def library_versions() -> dict:
    """Versions of the unpinned libraries whose numerics the runs depend on (see the docstring above)."""
    from importlib import metadata
    return {name: metadata.version(name) for name in ("flax", "optax", "numpy", "orbax-checkpoint")}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        Path(sys.argv[1]).write_text(json.dumps(outputs(Path(tmp)), indent=1, sort_keys=True) + "\n")
