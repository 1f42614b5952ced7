"""Test-time augmentation: named sets of views of each test image whose softmax is averaged.

    none        the image alone
    flip        the image and its mirror image (left-right)
    flip_shift  the image and its mirror, each also shifted by (+1, +1) and by (-1, -1) pixels
                (down-right and up-left, background fill): six views
    flip_cross  the image and its mirror, each also shifted one pixel up, down, left and right:
                ten views
    flip_ring   the image and its mirror, each also shifted to its eight neighbours at one pixel:
                eighteen views
    flip_diag2  flip_shift and the diagonal shifts by two pixels, (+2, +2) and (-2, -2): ten views

`experiments.tta_views` scores every set on a trained run's validation split, which is where a
set is chosen.

Every view has the same weight. The first view of every set is the plain image, so the plain
prediction comes with the TTA one at no extra cost (`view_logits(...)[0]`). The diagonal shifts
follow airbench's mirror-translate TTA (there a weighted mean of logits, here an equal-weight
mean of softmax, as the flip TTA of earlier runs).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp


class View(NamedTuple):
    """One view of an image: mirrored left-right or not, then moved by (dy, dx) pixels."""
    flip: bool = False
    dy: int = 0
    dx: int = 0


PLAIN = View()

VIEWS: dict[str, tuple[View, ...]] = {
    "none": (PLAIN,),
    "flip": (PLAIN, View(flip=True)),
    "flip_shift": (PLAIN, View(flip=True), View(False, 1, 1), View(False, -1, -1),
                   View(True, 1, 1), View(True, -1, -1)),
    "flip_cross": (PLAIN, View(flip=True)) + tuple(View(f, dy, dx) for f in (False, True)
                                                   for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))),
    "flip_ring": (PLAIN, View(flip=True)) + tuple(View(f, dy, dx) for f in (False, True)
                                                  for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx),
    "flip_diag2": (PLAIN, View(flip=True)) + tuple(View(f, d, d) for f in (False, True) for d in (1, -1, 2, -2)),
}


def check(name: str) -> str:
    """`name` when it names a set of views; ValueError naming the choices otherwise."""
    if name not in VIEWS:
        raise ValueError(f"unknown test-time augmentation {name!r}; choose from {', '.join(VIEWS)}.")
    return name


def shift(images, dy: int, dx: int):
    """NHWC images moved down by dy and right by dx pixels (static), zeros (background) shifted in."""
    if not dy and not dx:
        return images
    h, w = images.shape[1:3]
    pad = max(abs(dy), abs(dx))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return padded[:, pad - dy: pad - dy + h, pad - dx: pad - dx + w, :]


def apply_view(images, view: View):
    """The view of NHWC float images: mirrored first, then shifted."""
    if view.flip:
        images = images[:, :, ::-1, :]
    return shift(images, view.dy, view.dx)


def view_logits(predict: Callable, variables, x, name: str) -> list:
    """The logits of every view of the set `name`, plain image first: predict(variables, x,
    views=...) of a `scoring.make_member_predict` predict (one program for all the views)."""
    return list(predict(variables, x, views=VIEWS[check(name)]))
