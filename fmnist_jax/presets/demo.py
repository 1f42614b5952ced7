"""A demo for a laptop CPU: seed 003's net, 2 epochs of the 48,000-image split, one member.

A few minutes on two CPU cores, about 87-88% test (the README's quick start has the latest run).

  python -m experiments.cnn --preset=demo
"""

from fmnist_jax.config import TrainConfig

CONFIG = TrainConfig(model="seed003", epochs=2, batch=250, optimizer="adam", lr=1e-3,
                     val_fraction=0.2, split="random", augment=("flip",))

# The number to compare with, as the results table shows it.
REFERENCE = ''
