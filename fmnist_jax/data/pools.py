"""Augmented copies made once, before training: the offline augmentation of the Keras notebooks.

Seed 002 trained on every training image plus two augmented copies of it, drawn once; seed 003
made two copies of every image before it split off its validation images. `augmented_pool`
builds such a pool on the device (the copies in chunks, one PRNG key per copy); the run then
trains on the pool as a plain dataset, reshuffled every epoch (`TrainConfig.fixed_copies`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from fmnist_jax.data import augment
from fmnist_jax.models.layers import preprocess

# The copies' keys: a stream of the run's seed that no member key (init, data, loop) uses.
COPIES_STREAM = 0xC0913


def copies_key(seed: int) -> jax.Array:
    """The key of the run's fixed copies, from its seed."""
    return jax.random.fold_in(jax.random.key(seed), COPIES_STREAM)


def _unit_float(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1] (uint8 ones divided by 255, as `preprocess` does)."""
    return np.asarray(images, np.float32) / np.float32(255.0) if images.dtype == np.uint8 else np.asarray(images, np.float32)


def augmented_pool(images: np.ndarray, copies: int, transforms: Sequence[str], key: jax.Array,
                   options: dict | None = None, chunk: int = 2048) -> np.ndarray:
    """The images followed by `copies` augmented copies of each, float32 in [0, 1] [N * (1 + copies), 28, 28].

    Copy c of image i sits at N * (1 + c) + i and is `transforms` (an `augment.pipeline`, with
    `options`) applied with its own key, so the pool depends on `key` alone, not on `chunk`.
    """
    names = augment.parse(transforms)
    needs_where = [n for n in names if n in augment.NEEDS_WHERE]
    if needs_where:
        raise ValueError(f"augmentation {needs_where[0]!r} depends on the epoch; a fixed copy cannot use it.")
    one = augment.pipeline(names, **(options or {}))

    @jax.jit
    def augment_chunk(keys, chunk_images):
        x = preprocess(chunk_images)                       # [n, 28, 28, 1] float in [0, 1]
        return jax.vmap(lambda k, image: one(k, image[None])[0])(keys, x)[..., 0]

    n = len(images)
    pool = [_unit_float(images)]
    for c in range(copies):
        keys = jax.random.split(jax.random.fold_in(key, c), n)
        pool.append(np.concatenate([np.asarray(augment_chunk(keys[s:s + chunk], images[s:s + chunk]))
                                    for s in range(0, n, chunk)]))
    return np.concatenate(pool)


def pooled_labels(labels: np.ndarray, copies: int) -> np.ndarray:
    """The labels of `augmented_pool`'s images: the originals', then each copy's original's."""
    return np.tile(np.asarray(labels), 1 + copies)


def pool_training_split(images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                        copies: int, transforms: Sequence[str], key: jax.Array, options: dict | None = None):
    """(images, labels, train_idx, val_idx) with `copies` fixed copies of the training images only.

    The result holds every original (float32 in [0, 1]) followed by the training images' copies;
    train_idx covers the training originals and their copies, val_idx the same validation
    originals as before, unaugmented.
    """
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    made = augmented_pool(images[train_idx], copies, transforms, key, options)[len(train_idx):]
    base = _unit_float(images)
    n = len(images)
    all_images = np.concatenate([base, made])
    all_labels = np.concatenate([labels, np.tile(labels[train_idx], copies)])
    new_train = np.concatenate([train_idx, n + np.arange(len(made))])
    return all_images, all_labels, new_train, val_idx
