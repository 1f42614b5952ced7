"""The zoo: pinned parameter counts, output shapes, train/eval modes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax import models

# params + batch_stats, as Keras counts "Total params"; trainable = params alone.
PINNED = {
    "seed002": (3_458_382, 3_457_740),     # seed 002's layer table
    "seed003": (493_902, 493_772),         # seed 003's README: 493,772 trainable
    "seed004_cnn": (468_394, 468_010),
    "seed004_resnet": (698_282, 696_042),
    "inception": (141_562, 140_098),
    "mlp": (535_818, 535_818),
    "preact_resnet_small": (78_042, 77_562),
    "preact_resnet18": (11_178_826, 11_171_018),
    "wrn16_4": (2_779_466, 2_775_754),
    "wrn28_10": (36_703_530, 36_685_290),
    # Totals include the fixed whitening layer (3x3x1x9 kernel + 9 bias), which is not trainable.
    "speedrun": (383_002, 382_016),
    "speedrun_small": (99_386, 98_848),
    "speedrun_small_relu": (99_386, 98_848),
    "speedrun_relu": (383_002, 382_016),
    "speedrun_deep": (1_158_490, 1_156_608),
    "speedrun_bn_scale": (383_450, 382_464),
    "speedrun_no_whiten": (383_128, 382_196),
    # Stride-2 stem: fixed 4x4x1x16 whitening (272); convs 3x3x32x64, 3x3x64x128, 3x3x128x256; BN shifts
    # 448 (+ 896 stats); dense 256x10.
    "speedrun_s2": (391_248, 390_080),
    # speedrun_small + a scale for each of its 224 batch-norm channels.
    "speedrun_small_bn_scale": (99_610, 99_072),
    # speedrun_small - the fixed whitening (90) + a trained 3x3x1x18 conv (162) and its BN shift (18) and stats (36).
    "speedrun_small_no_whiten": (99_512, 99_028),
}


def _abstract_variables(model):
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                             jnp.zeros((2, 28, 28), jnp.uint8), train=False))


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_every_registered_model_is_pinned():
    assert sorted(PINNED) == models.names()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_parameter_count(name):
    variables = _abstract_variables(models.create(name))
    trainable = _count(variables["params"])
    total = trainable + _count(variables.get("batch_stats", {}))
    assert (total, trainable) == PINNED[name]


@pytest.mark.parametrize("name", ["seed002", "seed003", "seed004_cnn", "seed004_resnet", "inception",
                                  "mlp", "preact_resnet_small", "speedrun_small", "speedrun_no_whiten"])
def test_forward_shapes_and_modes(name):
    model = models.create(name)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 28, 28)), jnp.uint8)
    # Jitted: applied eagerly, every operation of a deep net is compiled on its own.
    variables = jax.jit(functools.partial(model.init, train=False))(
        {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    evaluate = jax.jit(functools.partial(model.apply, train=False))
    logits = evaluate(variables, x)
    assert logits.shape == (3, 10) and jnp.all(jnp.isfinite(logits))
    # NHWC float input gives the same logits as uint8 (preprocessing divides by 255).
    np.testing.assert_allclose(evaluate(variables, x[..., None] / 255.0), logits, rtol=1e-4, atol=1e-4)
    out, updates = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
        variables, x, rngs={"dropout": jax.random.key(2)})
    assert out.shape == (3, 10)


def test_unknown_model_names_the_choices():
    with pytest.raises(models.UnknownModelError, match="seed002"):
        models.create("vgg")
