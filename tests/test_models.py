"""The zoo: pinned parameter counts, output shapes, train/eval modes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist_jax import models

# params + batch_stats, as Keras counts "Total params"; trainable = params alone. Keyed by zoo
# name and arguments: the families' variants (and ablations) are arguments, not names.
PINNED = {
    ("seed002", ()): (3_458_382, 3_457_740),     # seed 002's layer table
    ("seed003", ()): (493_902, 493_772),         # seed 003's README: 493,772 trainable
    ("seed004_cnn", ()): (468_394, 468_010),
    ("seed004_resnet", ()): (698_282, 696_042),
    ("inception", ()): (141_562, 140_098),
    ("mlp", ()): (535_818, 535_818),
    ("resnet", (("stage_sizes", (1, 1, 1)), ("widths", (16, 32, 64)))): (78_042, 77_562),
    ("resnet", ()): (11_178_826, 11_171_018),    # pre-activation ResNet-18
    ("wrn", ()): (2_779_466, 2_775_754),         # WRN-16-4
    ("wrn", (("depth", 28), ("width", 10))): (36_703_530, 36_685_290),
    # Totals include the fixed whitening layer (3x3x1x9 kernel + 9 bias), which is not trainable.
    ("speedrun", ()): (383_002, 382_016),
    ("speedrun", (("widths", (32, 64, 128)),)): (99_386, 98_848),
    ("speedrun", (("activation", "relu"), ("widths", (32, 64, 128)))): (99_386, 98_848),
    ("speedrun", (("activation", "relu"),)): (383_002, 382_016),
    ("speedrun", (("depth", 2),)): (1_158_490, 1_156_608),
    ("speedrun", (("bn_scale", True),)): (383_450, 382_464),
    ("speedrun", (("whiten", False),)): (383_128, 382_196),
    # Stride-2 stem: fixed 4x4x1x16 whitening (272); convs 3x3x32x64, 3x3x64x128, 3x3x128x256; BN shifts
    # 448 (+ 896 stats); dense 256x10.
    ("speedrun", (("stem_stride", 2), ("whiten_patch", 4))): (391_248, 390_080),
    # speedrun_small + a scale for each of its 224 batch-norm channels.
    ("speedrun", (("bn_scale", True), ("widths", (32, 64, 128)))): (99_610, 99_072),
    # speedrun_small - the fixed whitening (90) + a trained 3x3x1x18 conv (162) and its BN shift (18) and stats (36).
    ("speedrun", (("whiten", False), ("widths", (32, 64, 128)))): (99_512, 99_028),
}


def _abstract_variables(model):
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                             jnp.zeros((2, 28, 28), jnp.uint8), train=False))


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def test_every_registered_model_is_pinned():
    assert sorted({name for name, _ in PINNED}) == models.names()


@pytest.mark.parametrize("name,args", sorted(PINNED), ids=lambda v: str(v) if isinstance(v, str) else
                         ",".join(f"{k}={a}" for k, a in v) or "defaults")
def test_parameter_count(name, args):
    variables = _abstract_variables(models.create(name, **dict(args)))
    trainable = _count(variables["params"])
    total = trainable + _count(variables.get("batch_stats", {}))
    assert (total, trainable) == PINNED[name, args]


def test_the_registry_holds_no_variants():
    # One name per architecture: nothing registered is a former (variant) name.
    assert not set(models.names()) & set(models.FORMER_NAMES)


@pytest.mark.parametrize("former", sorted(models.FORMER_NAMES))
def test_a_former_name_builds_the_model_it_named(former):
    family, args = models.FORMER_NAMES[former]
    counted = {(name, a): count for (name, a), count in PINNED.items()}
    key = (family, tuple(sorted(args.items())))
    variables = _abstract_variables(models.create(former))
    assert models.resolve(former) == (family, args)
    assert _count(variables["params"]) == counted[key][1]


def test_an_argument_the_model_does_not_take_names_what_it_takes():
    with pytest.raises(models.UnknownModelError, match="takes no argument 'widht'.*widths"):
        models.create("speedrun", widht=(8, 16))


@pytest.mark.parametrize("name,args", [
    ("seed002", {}), ("seed003", {}), ("seed004_cnn", {}), ("seed004_resnet", {}), ("inception", {}),
    ("mlp", {}), ("resnet", {"stage_sizes": (1, 1, 1), "widths": (16, 32, 64)}),
    ("speedrun", {"widths": (32, 64, 128)}), ("speedrun", {"whiten": False})])
def test_forward_shapes_and_modes(name, args):
    model = models.create(name, **args)
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
