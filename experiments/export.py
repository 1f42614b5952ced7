"""Export a trained run as serialized StableHLO (jax.export) with its weights inside, for use
without this package: only jax and numpy are needed to load and run it.

  python -m experiments.export --run=cnn_demo [--which=best|latest] [--member=I]

Writes results/<run>/export_<which>[_member<i>]/: model.jax (images uint8 [b, 28, 28] -> float32
[b, 10], any batch size b; lowered for CPU, CUDA and TPU), model.json (input, output, class
names) and load_model.py. For a run of several members the output is the log of their soft
vote unless --member picks one.
"""

from __future__ import annotations

import sys

from absl import flags

from experiments import cli
from fmnist_jax.serving import export


def define_flags(fv) -> None:
    cli.define_trained_run_flags(fv, data=False)
    flags.DEFINE_integer("member", None, "Export this member alone (0-based) instead of the ensemble's soft vote.",
                         flag_values=fv)


def main(fv, args) -> dict:
    paths = cli.trained_run_paths(fv)
    info = export.export_run(paths, fv.which, fv.member)
    print(f"{paths.name} ({fv.which}, {info['output']['meaning']}) exported: {info['bytes']:,} bytes of StableHLO "
          f"for {', '.join(info['platforms'])}, any batch size; files in {info['folder']} "
          f"(load with jax.export.deserialize, see load_model.py)")
    return info


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
