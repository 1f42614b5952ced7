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


# The Keras projects' transforms (issue 20: seed 002's, 003's and 004's augmentations).

def _many(fn, x, n=4000, **kwargs):
    keys = jax.random.split(jax.random.key(7), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: fn(k, x, **kwargs)))(keys))


def test_rotation_is_nearest_neighbour_with_edge_fill():
    x = _images(1)[0]
    np.testing.assert_array_equal(augment.random_rotation(jax.random.key(0), x, degrees=0.0), x)
    out = _many(augment.random_rotation, x, n=200)
    # Nearest-neighbour: every output pixel is one of the input's; edge fill: a constant stays constant.
    assert np.isin(out, np.asarray(x)).all()
    flat = jnp.full((28, 28, 1), 0.7)
    np.testing.assert_array_equal(_many(augment.random_rotation, flat, n=50), np.float32(0.7))
    # A rotation moves content (nearest-neighbour leaves an image as it is below about 2 degrees).
    assert (np.abs(out - np.asarray(x)).mean(axis=(1, 2, 3)) > 0).mean() > 0.7


def test_rotation_angles_are_uniform_within_the_range():
    # On an image whose value is its column index, row r's values show how far the rotation carried
    # it sideways: c_source - c = (r - 13.5) sin(theta); the slope over rows gives the angle.
    ramp = jnp.tile(jnp.arange(28.0)[None, :, None], (28, 1, 1))
    out = _many(augment.random_rotation, ramp, degrees=10.0)
    rows, cols = np.arange(2, 26), np.arange(10, 18)
    offsets = (out[:, rows][:, :, cols, 0] - cols).mean(axis=2)          # [draws, rows]
    centred = rows - 13.5
    angles = np.degrees(np.arcsin(offsets @ centred / (centred @ centred)))
    assert np.abs(angles).max() < 11.0 and np.abs(angles).max() > 9.0
    assert abs(np.mean(angles)) < 0.5
    assert np.std(angles) == pytest.approx(20 / np.sqrt(12), rel=0.1)     # uniform in ±10 degrees


def test_vertical_shift_moves_rows_only_within_the_range_with_edge_fill():
    columns = jnp.tile(jnp.linspace(0.0, 1.0, 28)[None, :, None], (28, 1, 1))   # varies along x only
    np.testing.assert_allclose(_many(augment.random_vertical_shift, columns, n=50), np.tile(columns, (50, 1, 1, 1)),
                               atol=1e-6)
    rows = jnp.tile(jnp.arange(28.0)[:, None, None], (1, 28, 1))                 # the row index
    out = _many(augment.random_vertical_shift, rows, fraction=0.2)
    shift = out[:, 14, 0, 0] - 14.0                # the centre row shows its source row: 14 - dy
    assert np.abs(shift).max() <= 0.2 * 28 + 1e-4
    assert np.var(shift) == pytest.approx((2 * 0.2 * 28) ** 2 / 12, rel=0.1)    # uniform in ±5.6 px
    assert out.min() >= 0.0 and out.max() <= 27.0                              # edge rows repeated, no zeros


def test_brightness_stretches_scales_clips_on_256_levels():
    x = _images(1)[0] * 0.5
    out = _many(augment.random_brightness, x, low=0.5, high=1.5)
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)       # 8-bit levels
    peaks = out.max(axis=(1, 2, 3))
    assert peaks.min() == pytest.approx(0.5, abs=0.01) and peaks.max() == 1.0
    # Stretched to 1 first, then a factor uniform in [0.5, 1.5], clipped: E[max] = 0.5 * 0.75 + 0.5.
    assert peaks.mean() == pytest.approx(0.875, abs=0.01)


@pytest.mark.parametrize("area, aspect, expected", [((0.02, 0.4), (0.3, 1 / 0.3), 0.135),     # seed 002
                                                   ((0.02, 0.1), (0.1, 10.0), 0.044)])         # seed 004
def test_rejection_erasing_matches_the_keras_eraser_statistics(area, aspect, expected):
    # The mean erased area given erasure, from a Monte Carlo of the projects' own sampler.
    x = jnp.ones((28, 28, 1))
    out = _many(augment.random_erasing, x, p=1.0, area=area, aspect=aspect, sampler="reject",
                fill="rectangle", fill_range=(0.0, 0.5))
    erased = out != 1.0
    assert erased.mean() == pytest.approx(expected, rel=0.05)
    # One constant fill value per rectangle, in the fill range.
    for o, e in zip(out[:50], erased[:50]):
        if e.any():
            assert np.unique(o[e]).size == 1 and 0.0 <= o[e][0] <= 0.5
    # The sampler without rejection keeps more large rectangles.
    fit = _many(augment.random_erasing, x, p=1.0, area=area, aspect=aspect, sampler="fit")
    assert (fit != 1.0).mean() > erased.mean()


def test_per_pixel_fill_stays_below_its_largest_value():
    out = _many(augment.random_erasing, jnp.ones((28, 28, 1)), n=500, p=1.0, fill_range=(0.0, 1 / 255))
    assert (out[out != 1.0] <= 1 / 255).all() and np.unique(out[out != 1.0]).size > 100
