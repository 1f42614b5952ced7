"""A CPU speedrun: targets >= 93.0% test (mean of 5 seeds) within 10 minutes on two CPU cores.

Wall clock from the command's start, compilation and evaluation included; the measured numbers
are in the README's results table. The recipe (each piece an option of the library, see issue 11):
a `speedrun`-family net (fixed patch-whitening first layer initialised from the training images,
batch norm without scale, GELU, global max pool); Nesterov SGD on a one-cycle schedule with an
8x learning rate for biases and batch-norm shifts; no label smoothing; alternating flips and
+/-2-pixel translations; an EMA of the weights (decay 0.99) for validation, the best epoch and
test; the test report averages the mirror and +/-1-pixel shifts (flip_shift TTA). A random 10%
of the training images validate.

Sized from measurements on this 2-core CPU: the `speedrun` net (64/128/256) trained at 305 img/s
in its first epoch (compilation included), too slow for 10 minutes, so this preset uses
`speedrun_small` (32/64/128, 870-1,000 img/s) for 8 epochs. Tuned on validation only: lr 0.05
from 42-step probes on 10,800 real images (0.2 made the training loss rise); then a one-seed
ablation of each piece (the README's ablation table), which dropped label smoothing 0.2
(validation 92.62% without it against 91.92%). With 0.2, five seeds gave 91.26 +/- 0.17% test,
91.98% with flip_shift TTA, 10.0 minutes a run (the results table's `speedrun_ls02` row); the
results table's `speedrun` row holds this preset's five seeds. GELU validated above ReLU.

  python -m experiments.cnn --preset=speedrun
"""

from fmnist_jax.config import TrainConfig

CONFIG = TrainConfig(model="speedrun_small", epochs=8, batch=256, optimizer="sgd", lr=0.05, momentum=0.9,
                     schedule="onecycle", weight_decay=5e-4, bias_lr_scale=8.0, label_smoothing=0.0,
                     augment=("alt_flip", "translate"), translate_pixels=2, ema_decay=0.99,
                     tta="flip_shift", val_fraction=0.1, split="random")

# The target the results table compares with.
REFERENCE = "target: ≥ 93.0% in ≤ 10 min (mean of 5 seeds)"

# Seeds the reference number averages (experiments.reproduce trains them as separate runs).
MEMBERS = 5
