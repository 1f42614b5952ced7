"""A multilayer-perceptron baseline."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from fmnist_jax.models.layers import Dense, Dropout, flatten, preprocess, record


class MLP(nn.Module):
    """Flattened pixels through ReLU hidden layers with dropout, then a linear classifier."""
    hidden: Sequence[int] = (512, 256)
    dropout: float = 0.2
    num_classes: int = 10
    conv_impl: str = "auto"    # the zoo's common interface; an MLP has no convolution to choose for

    @nn.compact
    def __call__(self, x, *, train: bool, dropout_scale=1.0):
        x = flatten(preprocess(x))
        for i, width in enumerate(self.hidden):
            x = nn.relu(Dense(width)(x))
            if i == len(self.hidden) - 1:
                record(self, "features", x)
            x = Dropout(self.dropout, deterministic=not train)(x, dropout_scale)
        return Dense(self.num_classes)(x)
