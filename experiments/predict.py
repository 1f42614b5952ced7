"""Classify image files with a trained run: the top-3 classes of each, with probabilities.

  python -m experiments.predict --run=cnn_demo shirt.jpg boot.png more.npy t10k-images-idx3-ubyte.gz
  python -m experiments.predict --run=cnn_demo --json photo.jpg > predictions.json

Takes PNG and JPEG pictures (any size, colour or grey, dark-on-light or light-on-dark) and NumPy
.npy / IDX arrays of 28x28 images. Pictures are brought to Fashion-MNIST's convention (grey, a
light object on a dark background, cropped, scaled into 28x28) and each line says what was done.
For a run of several members the classes are their soft vote. A file that cannot be read gets
one sentence on stderr and the others are still classified; the exit status is then 1.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from experiments import cli
from fmnist_jax.errors import UserError
from fmnist_jax.runs import restore
from fmnist_jax.serving import predict

TAKES_ARGS = True


def define_flags(fv) -> None:
    cli.define_trained_run_flags(fv, data=False)
    flags.DEFINE_bool("json", False, "Print one JSON document (predictions and errors) instead of text.",
                      flag_values=fv)


def _line(result: dict) -> str:
    name = result["file"] if result["index"] is None else f"{result['file']}[{result['index']}]"
    classes = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top"])
    return f"{name}: {classes}  (preprocessing: {'; '.join(result['preprocessing'])})"


def main(fv, args) -> dict:
    paths = cli.trained_run_paths(fv)
    if not args:
        raise UserError("no files given: python -m experiments.predict --run=NAME FILE...")
    restored = restore.restore_run(paths, fv.which)
    items, errors = [], []
    for path in args:
        try:
            items.extend(predict.read_file(path))
        except predict.FileError as e:
            errors.append({"file": path, "error": str(e)})
    results = predict.classify(restored, items)
    output = {"run": paths.name, "which": fv.which, "members": restored.n_members, "predictions": results,
              "errors": errors}
    if fv.json:
        print(json.dumps(output, indent=2))
    else:
        for result in results:
            print(_line(result))
    for error in errors:
        print(f"error: {error['error']}", file=sys.stderr)
    if errors:
        raise SystemExit(1)
    return output


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
