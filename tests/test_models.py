"""The zoo: pinned parameter counts, output shapes, train/eval modes."""

import functools
import os
import subprocess
import sys
from pathlib import Path

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
    # Seed 004's notebooks: 4 x conv(32, 68, 128, 256) + dense 512/256 (no summary printed; counted
    # from its layers), and the ResNet's printed summary (11,186,186 total, 11,178,378 trainable).
    ("seed004_cnn", ()): (661_022, 660_054),
    ("seed004_resnet", ()): (11_186_186, 11_178_378),
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
    # speedrun_long's net: fixed whitening 90; convs 3x3x18x48, 3x3x48x96, 3x3x96x192 (215,136); BN
    # shifts 336 (+ 672 stats); dense 192x10.
    ("speedrun", (("widths", (48, 96, 192)),)): (218_154, 217_392),
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


def test_seed004_nets_mark_the_kernels_their_notebooks_regularized():
    def marked(name, **args):
        model = models.create(name, **args)
        params = _abstract_variables(model)["params"]
        return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
                if model.regularized(tuple(k.key for k in path))}
    assert marked("seed004_cnn") == {"['dense1']['kernel']", "['dense2']['kernel']"}
    resnet = marked("seed004_resnet")
    assert len(resnet) == 1 + 16 + 3 and all("kernel" in p and "Dense" not in p for p in resnet)   # stem, blocks, shortcuts
    assert not hasattr(models.create("seed002"), "regularized")


def test_seed004_resnet_can_take_raw_pixels():
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 28, 28)), jnp.uint8)
    unit, raw = models.create("seed004_resnet"), models.create("seed004_resnet", input_scale=255.0)
    variables = jax.jit(functools.partial(unit.init, train=False))(jax.random.key(0), x)
    stem = lambda m: m.apply(variables, x, train=False, capture_intermediates=True,   # noqa: E731
                             mutable=["intermediates"])[1]["intermediates"]["stem"]["__call__"][0]
    np.testing.assert_allclose(stem(raw) - variables["params"]["stem"]["bias"],
                               255.0 * (stem(unit) - variables["params"]["stem"]["bias"]), rtol=1e-4, atol=1e-2)


def test_seed004_cnn_trains_with_finite_gradients_as_compiled_in_use():
    # XLA CPU's default (new) fusion emitters once turned this net's jitted gradient into NaN;
    # the suite compiles with other flags (conftest.py), so this runs as a user's process would.
    code = """
import jax, jax.numpy as jnp
from fmnist_jax import models
from tests.conftest import make_dataset
ds = make_dataset(n_train=160, n_test=40)
finite = []
for impl, batch in (("hybrid", 16), ("xla", 32), ("auto", 16)):   # each once gave NaN with a reshape-and-max pooling
    x, y = jnp.asarray(ds.x_train[:batch]), jnp.asarray(ds.y_train[:batch]).astype(jnp.int32)
    m = models.create("seed004_cnn", conv_impl=impl)
    v = m.init(jax.random.key(0), x, train=False)
    def loss(p):
        out, _ = m.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                         rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(batch), y])
    g = jax.jit(jax.grad(loss))(v["params"])
    finite.append(all(bool(jnp.isfinite(l).all()) for l in jax.tree.leaves(g)))
print(all(finite))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip().splitlines()[-1:] == ["True"], out.stderr[-2000:]
