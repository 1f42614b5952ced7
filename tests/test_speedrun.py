"""The speedrun net: its whitening layer whitens and is initialised from each member's training
images and never trained; batch norm without scale has none; the speedrun presets run end to end."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export
from jax import lax

from fmnist_jax import models, presets
from fmnist_jax.config import TrainConfig
from fmnist_jax.models import speedrun
from fmnist_jax.models.layers import preprocess
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.serving import export
from fmnist_jax.training import loop, train
from tests.conftest import make_dataset, placed


def _smooth_images(n=200, seed=0):
    """Images with strongly correlated neighbouring pixels (blurred noise), as real images have."""
    noise = jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))
    blur = jnp.ones((3, 3, 1, 1)) / 9.0
    x = lax.conv_general_dilated(noise, blur, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return x + 0.3 * noise


def _patch_covariance(y):
    flat = np.asarray(y, np.float64).reshape(-1, y.shape[-1])
    return flat.mean(0), np.cov(flat, rowvar=False, bias=True)


def test_the_whitening_layer_whitens_the_patches_of_its_data():
    x = _smooth_images()
    _, before = _patch_covariance(x[:, :3, :3].reshape(-1, 1, 1, 9))     # far from identity
    kernel, bias = speedrun.whitening_weights(x, patch=3, eps=1e-6)
    assert kernel.shape == (3, 3, 1, 9) and bias.shape == (9,)
    # The layer as the model applies it (HWIO kernel on NHWC images), on every VALID position.
    y = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    mean, cov = _patch_covariance(y)
    np.testing.assert_allclose(mean, 0, atol=1e-3)
    np.testing.assert_allclose(cov, np.eye(9), atol=2e-3)
    assert np.abs(before - np.diag(np.diag(before))).max() > 0.01
    # Larger eps shrinks only the faint directions: the strongest output channel keeps variance ~1.
    kernel, bias = speedrun.whitening_weights(x, patch=3, eps=0.1)
    y = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    variances = np.diag(_patch_covariance(y)[1])
    assert variances[0] > 0.95 and variances[-1] < 0.9 and (np.diff(variances) <= 1e-6).all()


def test_the_stride_2_stem_is_the_stride_1_whitening_at_every_other_position():
    x = _smooth_images(n=8)
    kernel, bias = speedrun.whitening_weights(x, patch=4)
    variables = {"batch_stats": {"kernel": kernel, "bias": bias}}

    def stem(stride):
        return speedrun.Whiten(patch=4, impl="xla", stride=stride).apply(variables, x)
    dense, strided = stem(1), stem(2)
    assert dense.shape == (8, 28, 28, 16) and strided.shape == (8, 14, 14, 16)
    np.testing.assert_allclose(strided, dense[:, ::2, ::2], rtol=1e-5, atol=1e-5)
    # The whole net: 14 -> 7 -> 3 -> 1 after the stem, 64/128/256 channels.
    model = models.create("speedrun", stem_stride=2, whiten_patch=4)
    variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28), jnp.uint8), train=False)
    _, seen = model.apply(variables, jnp.zeros((2, 28, 28), jnp.uint8), train=False, mutable=["intermediates"])
    shapes = {k: v[0].shape for k, v in seen["intermediates"].items()}
    assert shapes["conv0"] == (2, 14, 14, 32) and shapes["conv1"] == (2, 7, 7, 64) and shapes["conv3"] == (2, 1, 1, 256)


def _placed(cfg, n_train=96, n_val=32):
    ds = make_dataset(n_train=n_train, n_test=n_val)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    # The training split is not the first images of the pool: init must use the split's images.
    train_idx = np.arange(n_val, n_val + n_train)
    return placed(cfg, x, y, train_idx, np.arange(n_val)), x[train_idx]


def _has(tree, name):
    return any(jax.tree_util.keystr(p).endswith(f"['{name}']") for p, _ in jax.tree_util.tree_leaves_with_path(tree))


def test_trainer_initialises_the_whitening_from_the_training_split_and_training_never_moves_it():
    # Strong L2 decay through the gradient and a large bias learning rate: neither may reach it.
    cfg = TrainConfig(model="speedrun", model_args={"widths": (32, 64, 128)}, epochs=1, batch=32, optimizer="sgd", lr=0.05,
                            weight_decay=0.5, bias_lr_scale=8.0, ema_decay=0.9, augment=("alt_flip", "translate"))
    t, train_images = _placed(cfg)
    state = loop.init(*t)
    model = models.create("speedrun", widths=(32, 64, 128))
    want, _ = speedrun.whitening_weights(preprocess(train_images), model.whiten_patch, model.whiten_eps)
    kernel, bias = speedrun.whitening_of(jax.tree.map(lambda v: np.asarray(v[0], np.float64),
                                                      {"batch_stats": state.train.batch_stats}))
    # Eigenvectors are defined up to sign (and float rounding differs jitted): compare W W^T, which
    # is (cov + eps')^-1 of the training split's patches, and the patch mean the bias removes.
    w, want = kernel.reshape(9, 9), np.asarray(want, np.float64).reshape(9, 9)
    np.testing.assert_allclose(w @ w.T, want @ want.T, rtol=2e-3, atol=1e-2)
    patches = np.stack([train_images[:, i:26 + i, j:26 + j] for i in range(3) for j in range(3)], -1) / 255.0
    np.testing.assert_allclose(-bias @ np.linalg.inv(w), patches.reshape(-1, 9).mean(0), atol=1e-4)
    before = jax.tree.map(np.asarray, state.train)
    assert not _has(before.params, "scale")              # batch norm without scale: nothing to update
    assert not any("whiten" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(before.params))
    (_, state), = list(loop.epochs(*t, state))
    after = state.train
    for a, b in zip(speedrun.whitening_of({"batch_stats": after.batch_stats}),
                    speedrun.whitening_of({"batch_stats": before.batch_stats})):
        np.testing.assert_array_equal(np.asarray(a), b)
    for a, b in zip(speedrun.whitening_of(state.best), speedrun.whitening_of({"batch_stats": before.batch_stats})):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert any(not np.array_equal(np.asarray(a), b)
               for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before.params)))


def test_batch_norm_scale_is_a_model_option_and_the_ablations_build():
    def params(name, **args):
        return jax.eval_shape(lambda: models.create(name, **args).init(jax.random.key(0), jnp.zeros((1, 28, 28)),
                                                               train=False))
    assert not _has(params("speedrun")["params"], "scale")
    assert _has(params("speedrun", bn_scale=True)["params"], "scale")
    assert "whiten" not in params("speedrun", whiten=False).get("batch_stats", {})
    # Without a whitening layer the hook changes nothing.
    model = models.create("speedrun", whiten=False)
    variables = {"params": {}, "batch_stats": {}}
    assert model.init_from_data(variables, jnp.zeros((2, 28, 28), jnp.uint8)) is variables


@pytest.mark.parametrize("name", ["speedrun", "speedrun_long"])
def test_speedrun_presets_run_one_step_end_to_end(name, synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    # 60 images, 10% validation: 54 train, one step of 32.
    cfg = dataclasses.replace(presets.get(name), epochs=1, batch=32, train_limit=60, eval_batch=64)
    summary = train.train_and_evaluate(cfg, RunPaths(name, tmp_path / "results", tmp_path / "checkpoints"),
                                     data_dir=directory)
    assert summary["epochs"] == 1 and summary["tta"] == "flip_shift"
    assert 0.0 <= summary["test_accuracy_best_tta"] <= 1.0
    assert summary["test"]["best"]["member_loss"] != summary["test"]["best_tta"]["member_loss"]
    if name == "speedrun":
        # The fixed whitening layer travels with the variables: restored, exported, the same logits.
        paths = RunPaths(name, tmp_path / "results", tmp_path / "checkpoints")
        restored = restore.restore_run(paths, conv_impl="xla")
        assert "whiten" in restored.member_variables(0)["batch_stats"]
        images = make_dataset(n_test=5).x_test
        want = restored.model.apply(restored.member_variables(0), images, train=False)
        info = export.export_run(paths)
        exported = jax_export.deserialize(bytearray((Path(info["folder"]) / "model.jax").read_bytes()))
        np.testing.assert_allclose(exported.call(images), want, rtol=1e-4, atol=1e-4)


def test_the_activation_is_an_option_with_the_same_parameters():
    images = make_dataset(n_test=4).x_test
    gelu, relu = models.create("speedrun", widths=(32, 64, 128)), models.create("speedrun", widths=(32, 64, 128), activation="relu")
    variables = gelu.init(jax.random.key(0), images, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(relu.init(jax.random.key(0), images, train=False))

    def conv0(model):
        _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
        return np.asarray(state["intermediates"]["conv0"][0])

    # conv0 is the activation of the whitened patches and their negatives: ReLU keeps exactly
    # the positive half of each pair, GELU also passes small negative values.
    r, g = conv0(relu), conv0(gelu)
    half = r.shape[-1] // 2
    np.testing.assert_array_equal(r[..., :half] + r[..., half:], np.abs(r[..., :half] - r[..., half:]))
    assert r.min() == 0.0 and g.min() < 0.0
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        models.create("speedrun", widths=(32, 64, 128)).clone(activation="swish").init(jax.random.key(0), images, train=False)
