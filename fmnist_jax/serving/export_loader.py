"""Run an exported fmnist_jax model with nothing but JAX and NumPy (copied next to model.jax).

    python load_model.py images.npy          # uint8 [N, 28, 28] (or one [28, 28] image)

or, in Python:

    from jax import export
    run = export.deserialize(bytearray(open("model.jax", "rb").read())).call
    logits = run(images)                      # uint8 [b, 28, 28], any b -> float32 [b, 10]
"""

import json
import sys
from pathlib import Path

import numpy as np
from jax import export

HERE = Path(__file__).resolve().parent


def load(folder=HERE):
    """(function images -> logits, class names) of the export in `folder`."""
    folder = Path(folder)
    exported = export.deserialize(bytearray((folder / "model.jax").read_bytes()))
    return exported.call, json.loads((folder / "model.json").read_text())["class_names"]


if __name__ == "__main__":
    run, names = load()
    images = np.load(sys.argv[1]).astype(np.uint8).reshape(-1, 28, 28)
    for i, row in enumerate(np.asarray(run(images))):
        print(i, names[int(row.argmax())])
