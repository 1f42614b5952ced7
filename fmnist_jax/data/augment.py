"""Jittable, vmappable data augmentation, one PRNG key per example.

Every transform is a pure function ``(key, image [H, W, C] float in [0, 1]) -> image`` that
works eagerly, under `jit` and under `vmap`; `pipeline(names)` composes them into
``(key, batch [N, H, W, C], where=None) -> batch`` that splits one key per example. Shapes never
depend on the random draws (rectangles are masks, not dynamic slices), so a jitted step never
retraces.

A few transforms (`NEEDS_WHERE`: alternating flips) depend not on a fresh draw but on which
image it is and in which epoch; they take a `Where` (the example's index in the training pool,
the epoch, and a key fixed for the whole run) as a third argument, which the batch function
passes on per example.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

Transform = Callable[..., jax.Array]


class Where(NamedTuple):
    """Which example and when: what a per-image, per-epoch transform needs besides a key.

    In a batch, `index` is [N] (one per example) and `epoch`, `key` are shared.
    """
    index: jax.Array    # the example's index in the training pool (the same image, the same index)
    epoch: jax.Array    # the epoch, 0-based
    key: jax.Array      # fixed for the whole run: per-image draws that must not change between epochs


def random_flip(key, image, p: float = 0.5):
    """Mirrors the image left-right with probability p."""
    return jnp.where(jax.random.bernoulli(key, p), image[:, ::-1, :], image)


def alternating_flip(key, image, where: Where):
    """Mirrors the image in every other epoch: image i is flipped in epoch e iff
    bit(i) XOR (e mod 2), with bit(i) a fair coin drawn once per image from `where.key`.

    Over any two consecutive epochs each image is seen once each way (random flips leave a
    quarter of the images unflipped, or flipped, twice in a row). `key` is unused: nothing is
    drawn per step.
    """
    del key
    first = jax.random.bernoulli(jax.random.fold_in(where.key, where.index))
    flip = first ^ (where.epoch % 2 == 1)
    return jnp.where(flip, image[:, ::-1, :], image)


def random_translate(key, image, pixels: int = 2):
    """Moves the image by whole pixels, dy and dx each uniform in -pixels..pixels; zeros
    (background) fill what moves in: out[r, c] = image[r - dy, c - dx]."""
    dy, dx = jax.random.randint(key, (2,), -pixels, pixels + 1)
    padded = jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)))
    return jax.lax.dynamic_slice(padded, (pixels - dy, pixels - dx, 0), image.shape)


ERASE_SAMPLERS = ("fit", "reject")
ERASE_FILLS = ("pixel", "rectangle")


def erasing_rectangle(key, height: int, width: int, area=(0.02, 0.4), aspect=(0.3, 1 / 0.3),
                      tries: int = 10, sampler: str = "fit"):
    """(top, left, h, w, found) of a random-erasing rectangle (Zhong et al. 2017).

    Area is uniform in `area` x H*W and the aspect ratio h/w uniform in `aspect`.

    sampler "fit": sizes rounded; a size that does not fit is redrawn, up to `tries` times in
    parallel (the first that fits wins), and the position is uniform among the positions where
    it fits. sampler "reject": the sampler of the random-erasing code the Keras projects used
    (yu4u's cutout-random-erasing): sizes floored, the top-left corner uniform over the whole
    image, and the whole draw (size and corner) rejected until the rectangle fits, up to `tries`
    draws in parallel. Rejection favours small rectangles: its mean erased area is smaller.
    """
    k_area, k_aspect, k_top, k_left = jax.random.split(key, 4)
    s = jax.random.uniform(k_area, (tries,), minval=area[0], maxval=area[1]) * height * width
    r = jax.random.uniform(k_aspect, (tries,), minval=aspect[0], maxval=aspect[1])
    if sampler == "reject":
        h = jnp.floor(jnp.sqrt(s * r)).astype(jnp.int32)
        w = jnp.floor(jnp.sqrt(s / r)).astype(jnp.int32)
        top = jax.random.randint(k_top, (tries,), 0, height)
        left = jax.random.randint(k_left, (tries,), 0, width)
        fits = (top + h <= height) & (left + w <= width)
        first = jnp.argmax(fits)
        return top[first], left[first], h[first], w[first], fits.any()
    h = jnp.round(jnp.sqrt(s * r)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(s / r)).astype(jnp.int32)
    fits = (h >= 1) & (w >= 1) & (h <= height) & (w <= width)
    first = jnp.argmax(fits)
    h, w, found = h[first], w[first], fits.any()
    top = jax.random.randint(k_top, (), 0, height - h + 1)
    left = jax.random.randint(k_left, (), 0, width - w + 1)
    return top, left, h, w, found


def random_erasing(key, image, p: float = 0.5, area=(0.02, 0.4), aspect=(0.3, 1 / 0.3),
                   fill_range=(0.0, 1.0), fill: str = "pixel", sampler: str = "fit"):
    """With probability p, replaces a random rectangle (see `erasing_rectangle`) by uniform random
    values in `fill_range`: one per pixel (fill "pixel") or one for the whole rectangle ("rectangle")."""
    k_apply, k_rect, k_fill = jax.random.split(key, 3)
    height, width = image.shape[:2]
    top, left, h, w, found = erasing_rectangle(k_rect, height, width, area, aspect,
                                               tries=32 if sampler == "reject" else 10, sampler=sampler)
    rows = jnp.arange(height)[:, None, None]
    cols = jnp.arange(width)[None, :, None]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    erase = inside & found & jax.random.bernoulli(k_apply, p)
    shape = image.shape if fill == "pixel" else ()
    values = jax.random.uniform(k_fill, shape, image.dtype, fill_range[0], fill_range[1])
    return jnp.where(erase, values, image)


def _resample(image, src_r, src_c, order: int, mode: str):
    """image [H, W, C] sampled at (src_r, src_c) [H, W] per channel."""
    def one(channel):
        return ndimage.map_coordinates(channel, [src_r, src_c], order=order, mode=mode, cval=0.0)
    return jnp.moveaxis(jax.vmap(one, in_axes=-1)(image), 0, -1)


def random_rotation(key, image, degrees: float = 10.0):
    """Rotates by an angle uniform in ±degrees about the image centre, nearest-neighbour resampling
    and the edge pixels repeated outside (Keras 2.0's ImageDataGenerator(rotation_range,
    fill_mode="nearest"), which resampled rotations with order 0)."""
    theta = jnp.deg2rad(jax.random.uniform(key, (), minval=-degrees, maxval=degrees))
    height, width = image.shape[:2]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    src_r = cos * (rows - cy) - sin * (cols - cx) + cy
    src_c = sin * (rows - cy) + cos * (cols - cx) + cx
    return _resample(image, src_r, src_c, order=0, mode="nearest")


def random_vertical_shift(key, image, fraction: float = 0.2):
    """Moves the image up or down by a uniform ±fraction of its height (sub-pixel, bilinear), the
    edge rows repeated into what moves in (Keras' height_shift_range with fill_mode="nearest")."""
    height, width = image.shape[:2]
    dy = jax.random.uniform(key, (), minval=-fraction, maxval=fraction) * height
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    return _resample(image, rows - dy, cols.astype(jnp.float32), order=1, mode="nearest")


def random_brightness(key, image, low: float = 0.5, high: float = 1.5):
    """Stretches the image so that its brightest pixel is 1, then multiplies it by a factor
    uniform in [low, high] and clips to [0, 1], on a 256-level grid as Keras' brightness_range did
    (it went through an 8-bit PIL image: `array_to_img` stretched each image to a maximum of 255)."""
    peak = jnp.max(image)
    stretched = jnp.floor(jnp.where(peak > 0, image / jnp.maximum(peak, 1e-12), image) * 255.0)
    factor = jax.random.uniform(key, (), minval=low, maxval=high)
    return jnp.clip(jnp.round(stretched * factor), 0.0, 255.0) / 255.0


def random_shift_zoom(key, image, shift: float = 0.1, zoom: float = 0.1):
    """Random translation (up to `shift` of the size) and per-axis zoom in [1-zoom, 1+zoom].

    Bilinear resampling about the image centre; pixels from outside the image are 0 (background),
    like Keras' ImageDataGenerator(width_shift_range, height_shift_range, zoom_range, fill_mode="constant").
    """
    k_shift, k_zoom = jax.random.split(key)
    height, width = image.shape[:2]
    dy, dx = jax.random.uniform(k_shift, (2,), minval=-shift, maxval=shift) * jnp.array([height, width])
    zy, zx = jax.random.uniform(k_zoom, (2,), minval=1 - zoom, maxval=1 + zoom)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    src_r = (rows - cy) * zy + cy - dy
    src_c = (cols - cx) * zx + cx - dx

    return _resample(image, src_r, src_c, order=1, mode="constant")


TRANSFORMS: dict[str, Transform] = {
    "flip": random_flip,
    "alt_flip": alternating_flip,
    "translate": random_translate,
    "erase": random_erasing,
    "shift_zoom": random_shift_zoom,
    "rotate": random_rotation,
    "vshift": random_vertical_shift,
    "brightness": random_brightness,
}

# Transforms called as fn(key, image, where, **options).
NEEDS_WHERE = frozenset({"alt_flip"})


def parse(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'flip,erase' -> ('flip', 'erase'); '' or 'none' -> (); unknown names raise ValueError."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(n.strip() for n in names if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(TRANSFORMS)}.")
    return names


def pipeline(names: Sequence[str], **options) -> Callable[..., jax.Array]:
    """A batch transform ``(key, images [N, H, W, C], where=None)`` applying `names` in order,
    one independent key per example.

    `options` maps a transform name to its keyword arguments, e.g. erase={"p": 0.5}. `where`
    (a `Where` with index [N]) is required when a transform of `NEEDS_WHERE` is named.
    """
    names = parse(names)
    transforms = [(n, TRANSFORMS[n], options.get(n, {})) for n in names]
    needs_where = [n for n in names if n in NEEDS_WHERE]

    def one(key, image, where):
        for k, (name, fn, kwargs) in zip(jax.random.split(key, max(len(transforms), 1)), transforms):
            image = fn(k, image, where, **kwargs) if name in NEEDS_WHERE else fn(k, image, **kwargs)
        return image

    def batch(key, images, where: Where | None = None):
        if not transforms:
            return images
        keys = jax.random.split(key, images.shape[0])
        if where is None:
            if needs_where:
                raise ValueError(f"augmentation {needs_where[0]!r} needs each example's index and the "
                                 "epoch: pass where=Where(index, epoch, key).")
            return jax.vmap(lambda k, image: one(k, image, None))(keys, images)
        return jax.vmap(one, in_axes=(0, 0, Where(0, None, None)))(keys, images, where)

    return batch
