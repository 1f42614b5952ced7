"""Seed 004's ResNet, as its notebook trained it: 90.99% test, its final model.

Its ResNet-18-like net (7x7 stride-2 stem, four stages of 64-512, 1x1 shortcuts without BN,
11,186,186 parameters) on raw 0-255 pixels (input_scale=255: it never divided by 255), no
augmentation, L2 1e-4 on every convolution kernel, Adam at 1e-3 (epsilon 1e-7), batch 100 (its
notebook does not define the batch size; its progress bar counts in hundreds), 10 epochs, the
final state scored (its 90.99% is the in-memory model after the 10th epoch). What differs: those
10 epochs continued an earlier fit that was not kept; here they start from scratch.

  python -m experiments.cnn --preset=seed004_resnet
"""

from fmnist_jax.config import TrainConfig

CONFIG = TrainConfig(model="seed004_resnet", model_args={"input_scale": 255.0}, epochs=10, batch=100,
                     optimizer="adam", lr=1e-3, adam_eps=1e-7, l2=1e-4, val_fraction=0.2, split="random",
                     augment=(), select="val_loss")

# The number to compare with, as the results table shows it.
REFERENCE = '90.99% (seed 004, final model)'

# Which of each member's scored variables the reference is of: "best" (the selected epoch) or "final".
SCORED = "final"
