"""Classifying a user's files with a trained run: reading, preprocessing, top-k classes.

Files are recognised by their content: PNG (read by matplotlib), JPEG (Pillow), NumPy ``.npy`` and
IDX (gzipped or not) arrays of 28x28 images. Pictures are brought to Fashion-MNIST's convention
(`to_fashion_mnist`): grey, a light object on a dark background, the object cropped, its longer
side scaled to 28 pixels and centred on a 28x28 frame; a 28x28 picture is only made grey (and
inverted when its background is light), so a test image saved as PNG reads back exactly. Arrays
are taken as Fashion-MNIST images already (uint8 0-255, or floats in [0, 1]).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from fmnist_jax.data import datasets
from fmnist_jax.errors import UserError
from fmnist_jax.runs.restore import RestoredRun

PNG_MAGIC, JPEG_MAGIC, NPY_MAGIC, GZIP_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY", b"\x1f\x8b"
SIZE = 28


class FileError(UserError):
    """One input file cannot be classified; the message is one sentence naming it."""


@dataclasses.dataclass
class Item:
    """One image to classify: where it came from, its 28x28 uint8 pixels, what was done to it."""
    file: str
    index: int | None          # the position in an array file; None for a picture
    image: np.ndarray
    steps: list[str]

    @property
    def name(self) -> str:
        return self.file if self.index is None else f"{self.file}[{self.index}]"


def _grey(img: np.ndarray, steps: list[str]) -> np.ndarray:
    """A picture [H, W(, 3|4)] (uint8 or float) as float grey in [0, 1]; transparency over white."""
    img = np.asarray(img)
    img = img / 255.0 if np.issubdtype(img.dtype, np.integer) else img.astype(np.float64)
    if img.ndim == 3 and img.shape[-1] in (2, 4):      # grey+alpha or RGBA
        alpha = img[..., -1:]
        img = img[..., :-1] * alpha + (1.0 - alpha)
        if alpha.min() < 1.0:
            steps.append("transparent pixels taken as white")
    if img.ndim == 3 and img.shape[-1] == 3:
        if not (np.allclose(img[..., 0], img[..., 1]) and np.allclose(img[..., 1], img[..., 2])):
            steps.append("colour -> grey")
        img = img @ np.array([0.299, 0.587, 0.114])
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"an image of shape {img.shape}")
    return np.clip(img, 0.0, 1.0)


def _border(img: np.ndarray) -> np.ndarray:
    w = max(1, min(img.shape) // 20)
    return np.concatenate([img[:w].ravel(), img[-w:].ravel(), img[:, :w].ravel(), img[:, -w:].ravel()])


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.LANCZOS), np.float64)


def to_fashion_mnist(picture: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A picture of any size, colour or grey, either polarity -> (28x28 uint8 image, steps taken)."""
    steps: list[str] = []
    img = _grey(picture, steps)
    if np.median(_border(img)) > 0.5:
        img = 1.0 - img
        steps.append("inverted (dark object on a light background)")
    if img.shape == (SIZE, SIZE):
        return np.round(img * 255).astype(np.uint8), steps or ["none (already 28x28, grey, light on dark)"]
    background = float(np.median(_border(img)))
    img = np.clip(img - background, 0.0, None)
    top = img.max()
    if top <= 0:
        raise ValueError("a blank picture (no object against its background)")
    rows, cols = np.flatnonzero((img > 0.1 * top).any(1)), np.flatnonzero((img > 0.1 * top).any(0))
    img = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = img.shape
    steps.append(f"cropped to the object ({w}x{h} of {picture.shape[1]}x{picture.shape[0]} pixels)")
    scale = SIZE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.clip(_resize(img, nh, nw), 0.0, None)
    frame = np.zeros((SIZE, SIZE))
    y0, x0 = (SIZE - nh) // 2, (SIZE - nw) // 2
    frame[y0:y0 + nh, x0:x0 + nw] = small
    frame = frame / frame.max() if frame.max() > 0 else frame
    steps.append(f"scaled to {nw}x{nh}, centred on 28x28, contrast stretched to 0-255")
    return np.round(frame * 255).astype(np.uint8), steps


def _array_images(array: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (SIZE, SIZE) or len(a) == 0:
        raise ValueError(f"{what} of shape {tuple(np.shape(array))}, not 28x28 images [N, 28, 28]")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 255:
            raise ValueError(f"{what} whose values are not pixels (0-255, or 0-1)")
        a = a * 255.0 if a.max() <= 1.0 else a
        return np.round(a).astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 255:
        raise ValueError(f"{what} of {a.dtype} values outside 0-255")
    return a.astype(np.uint8)


def read_file(path: str | os.PathLike) -> list[Item]:
    """The images of one file, preprocessed; FileError (one sentence naming the file) otherwise."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise FileError(f"{name}: cannot read the file ({e.strerror or e}).") from None
    if not raw:
        raise FileError(f"{name}: the file is empty.")
    try:
        if raw.startswith((PNG_MAGIC, JPEG_MAGIC)):
            picture = _read_picture(raw)
            image, steps = to_fashion_mnist(picture)
            return [Item(name, None, image, steps)]
        if raw.startswith(NPY_MAGIC):
            images = _array_images(np.load(io.BytesIO(raw), allow_pickle=False), "a .npy array")
            kind = "NumPy array"
        else:
            payload = gzip.decompress(raw) if raw.startswith(GZIP_MAGIC) else raw
            if payload[:2] != b"\x00\x00" or len(payload) < 4:
                raise FileError(f"{name}: not a PNG, JPEG, .npy or IDX file.")
            images = _array_images(datasets.parse_idx(payload, name), "an IDX array")
            kind = "IDX array"
    except FileError:
        raise
    except datasets.DataError as e:
        raise FileError(f"{name}: not a readable IDX file ({str(e).removeprefix(name + ': ').rstrip('.')}).") from None
    except (ValueError, OSError, EOFError, zlib.error, SyntaxError) as e:
        raise FileError(f"{name}: cannot be classified: {str(e).rstrip('.') or type(e).__name__}.") from None
    return [Item(name, i, img, [f"{kind} taken as Fashion-MNIST images"]) for i, img in enumerate(images)]


def _read_picture(raw: bytes) -> np.ndarray:
    if raw.startswith(PNG_MAGIC):
        import matplotlib.image
        return np.asarray(matplotlib.image.imread(io.BytesIO(raw), format="png"))
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return np.asarray(img.convert("L") if img.mode not in ("L", "RGB", "RGBA") else img)
    except UnidentifiedImageError as e:
        raise ValueError("a damaged JPEG") from e


def make_classifier(restored: RestoredRun):
    """probabilities(images uint8 [N, 28, 28]) -> [N, C]: the soft vote of the run's members."""
    model = restored.model

    @jax.jit
    def vote(variables, x):
        logits = jax.vmap(lambda v: model.apply(v, x, train=False))(variables)
        return jax.nn.softmax(logits.astype(np.float32), axis=-1).mean(0)

    variables = jax.tree.map(np.asarray, restored.variables)
    return lambda images: np.asarray(vote(variables, np.asarray(images, np.uint8)))


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int = 3) -> list[dict]:
    """The k most probable classes of one image: [{"class", "label", "probability"}], best first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class": int(c), "label": class_names[c], "probability": float(probs[c])} for c in order]


def classify(restored: RestoredRun, items: Sequence[Item], k: int = 3, batch: int = 256) -> list[dict]:
    """Each item's top-k classes under the run's soft vote: [{"file", "index", "top", "preprocessing"}]."""
    probabilities = make_classifier(restored)
    images = np.stack([it.image for it in items]) if items else np.zeros((0, SIZE, SIZE), np.uint8)
    probs = []
    for start in range(0, len(images), batch):       # fixed-size batches: one compiled program
        chunk = images[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), SIZE, SIZE), np.uint8)])
        probs.append(probabilities(padded)[:len(chunk)])
    probs = np.concatenate(probs) if probs else np.zeros((0, len(restored.class_names)))
    return [{"file": it.file, "index": it.index, "top": top_k(p, restored.class_names, k),
             "preprocessing": it.steps} for it, p in zip(items, probs)]
