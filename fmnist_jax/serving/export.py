"""A trained run as a self-contained artefact: serialized StableHLO with the weights inside.

    info = export.export_run(RunPaths("my_run"))

writes results/<run>/export_<which>[_member<i>]/: model.jax (`jax.export` serialization of
``images uint8 [b, 28, 28] -> float32 [b, 10]`` with a symbolic batch size b), model.json (input,
output, class names, where it came from) and load_model.py, a loader that needs only jax and numpy:

    from jax import export
    run = export.deserialize(bytearray(open("model.jax", "rb").read())).call
    logits = run(images)              # uint8 [b, 28, 28], any b

The output is the model's logits for a run of one member (or with `member`); for a run of several
members it is the log of their soft vote (log mean softmax), whose softmax and argmax are the
ensemble's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from fmnist_jax.errors import RunError
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import RunPaths, write_json

LOADER = Path(__file__).with_name("export_loader.py")
PLATFORMS = ("cpu", "cuda", "tpu")    # lowered for each; the caller's backend picks its own


def model_function(restored: restore.RestoredRun, member: int | None = None):
    """images uint8 [b, 28, 28] -> float32 [b, C]: a member's logits, or the log soft vote of all."""
    model = restored.model
    if member is not None or restored.n_members == 1:
        variables = restored.member_variables(member or 0)
        return lambda x: model.apply(variables, x, train=False).astype(jnp.float32)
    variables = jax.tree.map(np.asarray, restored.variables)

    def vote(x):
        logits = jax.vmap(lambda v: model.apply(v, x, train=False))(variables).astype(jnp.float32)
        return jnp.log(jax.nn.softmax(logits, axis=-1).mean(0))
    return vote


def export_function(fn, platforms=PLATFORMS) -> bytes:
    """`fn` on uint8 [b, 28, 28] with a symbolic batch size b, serialized by jax.export."""
    (b,) = jax_export.symbolic_shape("b")
    exported = jax_export.export(jax.jit(fn), platforms=platforms)(jax.ShapeDtypeStruct((b, 28, 28), jnp.uint8))
    return bytes(exported.serialize())


def export_run(paths: RunPaths, which: str = "best", member: int | None = None) -> dict:
    """Exports the run's `which` variables (every member's soft vote, or `member`); returns model.json."""
    restored = restore.restore_run(paths, which, conv_impl="xla")    # plain lax.conv: portable HLO
    restored.check_member(member)
    blob = export_function(model_function(restored, member))
    out = paths.results / (f"export_{which}" + ("" if member is None else f"_member{member}"))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        (tmp / "model.jax").write_bytes(blob)
        shutil.copyfile(LOADER, tmp / "load_model.py")
        vote = member is None and restored.n_members > 1
        info = {
            "run": paths.name, "which": which, "member": member, "members": restored.n_members,
            "epochs": restored.epochs, "model": restored.cfg.model, "dataset": restored.cfg.dataset,
            "class_names": list(restored.class_names),
            "input": {"shape": ["b", 28, 28], "dtype": "uint8", "meaning": "grey images, light object on a "
                      "dark background, 0-255 (Fashion-MNIST's convention)"},
            "output": {"shape": ["b", len(restored.class_names)], "dtype": "float32",
                       "meaning": "log of the members' mean softmax (soft vote)" if vote else "logits"},
            "platforms": list(PLATFORMS), "jax_version": jax.__version__, "bytes": len(blob),
        }
        write_json(tmp / "model.json", info)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunError(f"cannot write the export to {out} ({e.strerror or e}).") from e
    return info | {"folder": str(out)}
