"""The longer CPU speedrun: targets >= 94.0% test (mean of 5 seeds) within 30 minutes on two CPU cores.

The `speedrun` preset's recipe with the wider `speedrun` net (64/128/256) for 10 epochs and random
erasing (p = 0.5) after the alternating flips and translations. The epoch count is sized from the
first epoch of the `speedrun` net (305 img/s with compilation, 54,000 images in about 3 minutes on
this 2-core CPU): 10 epochs and the evaluation fit 30 minutes, 12 would not. Measured numbers are
in the README's results table.

  python -m experiments.cnn --preset=speedrun_long
"""

import dataclasses

from fmnist_jax.presets import speedrun

# Label smoothing 0.2 as run (the 10-minute recipe dropped it after its ablation; not yet measured here).
CONFIG = dataclasses.replace(speedrun.CONFIG, model="speedrun", epochs=10, augment=("alt_flip", "translate", "erase"),
                             erase_p=0.5, label_smoothing=0.2)

# The target the results table compares with.
REFERENCE = "target: ≥ 94.0% in ≤ 30 min (mean of 5 seeds)"

# Seeds the reference number averages (experiments.reproduce trains them as separate runs).
MEMBERS = 5
