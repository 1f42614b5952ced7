"""experiments.export: the artefact loads with plain JAX in a process that cannot import fmnist_jax and
gives the model's logits for batch sizes 1 and 37."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import cli
from experiments import export as export_script
from fmnist_jax.evaluation import ensemble
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import RunPaths

# Run by a fresh interpreter that is refused fmnist_jax: the export's own loader and nothing else.
LOAD = """
import sys
sys.modules["fmnist_jax"] = None
try:
    import fmnist_jax
    raise SystemExit("fmnist_jax must not be importable here")
except ImportError:
    pass
sys.path.insert(0, sys.argv[1])
import numpy as np
from load_model import load
run, names = load(sys.argv[1])
for n in (1, 37):
    x = np.load(sys.argv[2])[:n]
    np.save(f"{sys.argv[3]}_{n}.npy", np.asarray(run(x)))
print(len(names))
"""


def _reference(results, member):
    restored = restore.restore_run(RunPaths("mlp2", results.parent, results.parent.parent / "checkpoints"))
    logits = np.stack([np.asarray(restored.model.apply(restored.member_variables(m), IMAGES, train=False))
                       for m in range(restored.n_members)])
    return logits[member] if member is not None else np.log(ensemble.softmax(logits).mean(0))


IMAGES = np.random.default_rng(5).integers(0, 256, (37, 28, 28)).astype(np.uint8)


@pytest.mark.parametrize("member", [None, 1])
def test_export_round_trip_without_the_package(mlp_ensemble, tmp_path, capsys, member):
    flags, _, results = mlp_ensemble
    extra = [] if member is None else [f"--member={member}"]
    info = cli.invoke(export_script, ["--run=mlp2", *extra, *flags[1:]])
    folder = results / ("export_best" + ("" if member is None else f"_member{member}"))
    assert info["folder"] == str(folder) and "exported" in capsys.readouterr().out
    meta = json.loads((folder / "model.json").read_text())
    assert meta["output"]["meaning"] == ("logits" if member is not None else "log of the members' mean softmax (soft vote)")
    exported = jax.export.deserialize(bytearray((folder / "model.jax").read_bytes()))
    assert str(exported.in_avals[0].shape[0]) == "b" and exported.in_avals[0].shape[1:] == (28, 28)
    assert exported.platforms == ("cpu", "cuda", "tpu")
    np.save(tmp_path / "x.npy", IMAGES)
    done = subprocess.run([sys.executable, "-c", LOAD, str(folder), str(tmp_path / "x.npy"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10"
    expected = _reference(results, member)
    for n in (1, 37):
        got = np.load(tmp_path / f"out_{n}.npy")
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected[:n], rtol=1e-5, atol=1e-5)

