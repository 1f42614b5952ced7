"""A multilayer-perceptron baseline."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from fmnist_jax.models.layers import Dense, Dropout, flatten, preprocess


class MLP(nn.Module):
    """Flattened pixels through ReLU hidden layers with dropout, then a linear classifier."""
    hidden: Sequence[int] = (512, 256)
    dropout: float = 0.2
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = flatten(preprocess(x))
        for width in self.hidden:
            x = Dropout(self.dropout, deterministic=not train)(nn.relu(Dense(width)(x)))
        return Dense(self.num_classes)(x)
