"""Seed 004's ResNet: 90.99% test.

The same protocol as `seed004_cnn` (80/20 split; flip, shift/zoom and random erasing; Adam,
50 epochs of batch 128), with a small post-activation ResNet (three stages of two basic blocks;
seed 004 gives no layer table).

  python -m experiments.cnn --preset=seed004_resnet
"""

import dataclasses

from fmnist_jax.presets import seed004_cnn

CONFIG = dataclasses.replace(seed004_cnn.CONFIG, model="seed004_resnet")

# The number to compare with, as the results table shows it.
REFERENCE = '90.99% (seed 004)'
