"""Augmentation: determinism, exact flips, alternating flips, translations, erasing statistics, shift/zoom,
jit/vmap, no retracing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax.data import augment


def _images(n=8, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))


def test_same_key_same_image_and_different_keys_differ():
    x = _images(1)[0]
    for name, fn in augment.TRANSFORMS.items():
        if name in augment.NEEDS_WHERE:           # drawn per image and epoch, not per key (below)
            continue
        a, b = fn(jax.random.key(1), x), fn(jax.random.key(1), x)
        np.testing.assert_array_equal(a, b)
        outs = [np.asarray(fn(jax.random.key(i), x)) for i in range(20)]
        assert any(not np.array_equal(outs[0], o) for o in outs[1:]), name


def test_flip_is_exact_and_happens_about_half_the_time():
    x = _images(1)[0]
    outs = [np.asarray(augment.random_flip(jax.random.key(i), x)) for i in range(400)]
    flipped = [np.array_equal(o, np.asarray(x)[:, ::-1]) for o in outs]
    kept = [np.array_equal(o, np.asarray(x)) for o in outs]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0.42 < np.mean(flipped) < 0.58


def _where(n, epoch, seed=0):
    return augment.Where(jnp.arange(n), jnp.asarray(epoch), jax.random.key(seed))


def test_alternating_flip_flips_each_image_exactly_every_other_epoch():
    n = 400
    x = _images(n)
    fn = jax.jit(augment.pipeline(["alt_flip"]))
    flipped = []
    for epoch in range(5):
        # A fresh step key every epoch: the flips depend only on the image and the epoch.
        out = np.asarray(fn(jax.random.key(100 + epoch), x, _where(n, epoch)))
        is_flipped = np.array([np.array_equal(o, np.asarray(i)[:, ::-1]) for o, i in zip(out, x)])
        kept = np.array([np.array_equal(o, np.asarray(i)) for o, i in zip(out, x)])
        assert (is_flipped ^ kept).all()           # exactly mirrored or exactly kept
        flipped.append(is_flipped)
    flipped = np.array(flipped)                    # [epoch, image]
    assert (flipped[1:] != flipped[:-1]).all()     # every image changes side every epoch
    assert 0.42 < flipped[0].mean() < 0.58         # the first side is a fair coin per image
    # The same image in another batch position, or in a batch of its own, flips the same way.
    reordered = np.asarray(fn(jax.random.key(0), x[::-1], augment.Where(jnp.arange(n)[::-1], jnp.asarray(2),
                                                                         jax.random.key(0))))
    np.testing.assert_array_equal(reordered[::-1], np.asarray(fn(jax.random.key(1), x, _where(n, 2))))
    # Another run key draws other first sides.
    other = np.asarray(fn(jax.random.key(0), x, _where(n, 0, seed=1)))
    assert not np.array_equal(other, np.asarray(fn(jax.random.key(0), x, _where(n, 0))))


def test_alternating_flip_without_where_is_a_clear_error():
    with pytest.raises(ValueError, match="alt_flip.*needs each example's index and the epoch"):
        augment.pipeline(["alt_flip"])(jax.random.key(0), _images(2))


def test_translate_moves_content_exactly_by_whole_pixels_within_range():
    x = _images(1)[0]
    shifts = []
    for i in range(600):
        out = np.asarray(augment.random_translate(jax.random.key(i), x, pixels=2))
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(out, np.asarray(_shifted(x, dy, dx)))]
        assert len(found) == 1, i                  # exactly one integer shift, zero fill
        shifts.append(found[0])
    shifts = np.array(shifts)
    # Each axis uniform over -2..2 (5 values, expected 120 each of 600) and independent.
    for axis in range(2):
        counts = np.bincount(shifts[:, axis] + 2, minlength=5)
        assert counts.min() > 80 and counts.max() < 160, counts
    assert abs(np.corrcoef(shifts.T)[0, 1]) < 0.1
    assert len({tuple(s) for s in shifts}) == 25


def _shifted(x, dy, dx):
    """x moved by (dy, dx) with zeros shifted in, written independently of the library."""
    out = np.zeros_like(np.asarray(x))
    h, w = out.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = np.asarray(x)[max(-dy, 0):h + min(-dy, 0),
                                                                               max(-dx, 0):w + min(-dx, 0)]
    return out


def test_erasing_rate_and_area_are_in_their_ranges():
    x = jnp.full((28, 28, 1), -1.0)  # erased pixels take values in [0, 1]: easy to count
    fn = jax.jit(jax.vmap(augment.random_erasing))
    out = np.asarray(fn(jax.random.split(jax.random.key(0), 4000), jnp.broadcast_to(x, (4000, 28, 28, 1))))
    erased = (out >= 0).reshape(4000, -1)
    fraction = erased.mean(1)
    rate = (fraction > 0).mean()
    assert 0.46 < rate < 0.54                      # p = 0.5
    area = fraction[fraction > 0]
    # Rounding the sides to whole pixels can move the area a little outside [0.02, 0.4].
    assert area.min() >= 0.01 and area.max() <= 0.45
    assert 0.12 < area.mean() < 0.24               # uniform in [0.02, 0.4] has mean 0.21
    values = out[out >= 0]
    assert 0.45 < values.mean() < 0.55             # uniform random fill


def test_erased_region_is_a_rectangle():
    x = jnp.full((28, 28, 1), -1.0)
    for i in range(50):
        out = np.asarray(augment.random_erasing(jax.random.key(i), x, p=1.0))[..., 0] >= 0
        rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
        if rows.size:
            assert out[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
            assert out.sum() == rows.size * cols.size


def test_shift_zoom_without_change_is_identity_and_shift_moves_content():
    x = _images(1)[0]
    same = augment.random_shift_zoom(jax.random.key(0), x, shift=0.0, zoom=0.0)
    np.testing.assert_allclose(same, x, atol=1e-5)
    blob = jnp.zeros((28, 28, 1)).at[12:16, 12:16].set(1.0)
    centres = []
    for i in range(200):
        out = np.asarray(augment.random_shift_zoom(jax.random.key(i), blob, shift=0.1, zoom=0.0))[..., 0]
        centres.append(np.argwhere(out > 0.5).mean(0))
    centres = np.array(centres)
    assert np.abs(centres - 13.5).max() <= 0.1 * 28 + 1
    assert centres.std(0).min() > 0.8               # really moves, in both directions


def test_pipeline_is_per_example_and_does_not_retrace():
    fn = augment.pipeline("flip,translate,erase,shift_zoom")
    traces = []

    @jax.jit
    def step(key, images):
        traces.append(1)
        return fn(key, images)

    x = _images(16)
    a = step(jax.random.key(0), x)
    b = step(jax.random.key(1), x)
    assert len(traces) == 1
    assert a.shape == x.shape and not np.array_equal(a, b)
    # One key per example: identical inputs in a batch come out different.
    same = step(jax.random.key(2), jnp.broadcast_to(x[:1], (16, 28, 28, 1)))
    assert len({np.asarray(s).tobytes() for s in same}) > 1


def test_parse():
    assert augment.parse("flip, erase") == ("flip", "erase")
    assert augment.parse("none") == () and augment.parse("") == ()
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        augment.parse("flip,blur")
