"""Optimizer options: Muon's updates equal its definition (orthogonalised Nesterov momentum on the
kernels, Adam on the rest) and it trains; the EMA of the weights equals its definition and is what evaluation uses; the
bias learning-rate scale moves biases s times as far; switched off, both leave the state and the
steps exactly as before."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

from fmnist_jax import models
from fmnist_jax.config import TrainConfig
from fmnist_jax.training import loop, optim, step
from tests.conftest import make_dataset, placed

TINY = TrainConfig(model="mlp", epochs=1, batch=16, augment=(), seed=1, lr=3e-3)


def _placed(cfg, n_train=64, n_val=32):
    ds = make_dataset(n_train=n_train, n_test=n_val)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    return placed(cfg, x, y, np.arange(n_train), np.arange(n_train, n_train + n_val))


def _member0(tree):
    return jax.tree.map(lambda v: np.asarray(v[0]), tree)


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def test_ema_decay_warms_up_then_stays():
    d = [float(optim.ema_decay_at(0.9, t)) for t in range(200)]
    assert d[0] == pytest.approx(0.1) and d[8] == pytest.approx(9 / 18)
    assert d[-1] == pytest.approx(0.9) and all(np.diff(d) >= 0)


def test_ema_equals_its_definition_over_a_few_steps_and_evaluation_uses_it():
    decay = 0.15              # the warm-up (1 + t) / (10 + t) exceeds it from the second step on
    cfg = dataclasses.replace(TINY, ema_decay=decay)
    t = _placed(cfg)
    state = jax.tree.map(lambda v: v[0], loop.init(*t).train)
    train_step = jax.jit(step.make_train_step(t.programs.model, cfg, t.setup.steps_per_epoch))
    ema = _host(state.params)
    for s in range(4):
        state, _ = train_step(state, t.setup.x[16 * s: 16 * (s + 1)], t.setup.y[16 * s: 16 * (s + 1)], jax.random.key(s))
        d = min(decay, (1 + s) / (10 + s))
        ema = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, ema, _host(state.params))
    got = _host(step.variables_of(state)["params"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ema)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The average is not the parameters (else the test would prove nothing).
    assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(_host(state.params)))) > 1e-4


def test_validation_and_the_best_variables_are_the_ema():
    cfg = dataclasses.replace(TINY, ema_decay=0.9)
    t = _placed(cfg)
    (result, run_state), = list(loop.epochs(*t, loop.init(*t)))
    ema = optim.ema_params(run_state.train.opt_state)
    for a, b in zip(jax.tree.leaves(run_state.best["params"]), jax.tree.leaves(ema)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loop.validate(*t, run_state.best)["accuracy"].tolist() == result.val_accuracy
    raw = {"params": run_state.train.params, "batch_stats": run_state.train.batch_stats}
    assert loop.validate(*t, raw)["loss"].tolist() != result.val_loss


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_off_the_state_and_the_step_are_exactly_the_plain_optimizers(optimizer):
    """ema_decay=0 and bias_lr_scale=1 (the defaults) chain nothing: the state has the structure it
    had before these options existed (so old checkpoints restore), and a step the same bits."""
    cfg = dataclasses.replace(TINY, optimizer=optimizer, weight_decay=1e-3)
    hp = step.HParams.create(cfg)
    lr = step.learning_rate_schedule(cfg, 4, hp.lr)
    plain = {"adam": optax.chain(optax.add_decayed_weights(hp.weight_decay), optax.adam(lr)),
             "adamw": optax.adamw(lr, weight_decay=hp.weight_decay),
             "sgd": optax.chain(optax.add_decayed_weights(hp.weight_decay),
                                optax.sgd(lr, momentum=cfg.momentum, nesterov=True))}[optimizer]
    model = step.build_model(cfg)
    state = step.init_state(model, step.make_optimizer(cfg, 4), jax.random.key(0), hp)
    old = step.init_state(model, plain, jax.random.key(0), hp)
    assert jax.tree.structure(state) == jax.tree.structure(old)
    assert optim.ema_params(state.opt_state) is None
    x, y = make_dataset(n_train=16).x_train, make_dataset(n_train=16).y_train
    new, _ = step.make_train_step(model, cfg, 4)(state, x, y, jax.random.key(1))
    grads = jax.grad(lambda p: step.cross_entropy(model.apply(
        {"params": p, "batch_stats": {}}, jnp.asarray(x / 255.0, jnp.float32)[..., None], train=True,
        rngs={"dropout": jax.random.split(jax.random.key(1))[1]}), y).mean())(old.params)
    updates, _ = plain.update(grads, old.opt_state, old.params)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(optax.apply_updates(old.params, updates))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "muon"])
def test_bias_lr_scale_moves_biases_s_times_as_far_and_kernels_unchanged(optimizer):
    # seed003 has convolution, dense and batch-norm biases (beta) and batch-norm scales (gamma).
    params = jax.jit(lambda k: models.create("seed003").init(k, jnp.zeros((1, 28, 28)), train=False))(
        jax.random.key(0))["params"]
    leaves, treedef = jax.tree.flatten(params)
    grads = treedef.unflatten([jax.random.normal(jax.random.key(i), p.shape) for i, p in enumerate(leaves)])
    base = dataclasses.replace(TINY, optimizer=optimizer, weight_decay=1e-3, lr=0.01)

    def updates_with(scale):
        tx = step.make_optimizer(dataclasses.replace(base, bias_lr_scale=scale), 10)
        updates, _ = tx.update(grads, tx.init(params), params)
        return updates

    one, four = updates_with(1.0), updates_with(4.0)
    names = []
    for (path, u1), u4 in zip(jax.tree_util.tree_leaves_with_path(one), jax.tree.leaves(four)):
        name = jax.tree_util.keystr(path)
        names.append(name)
        if name.endswith("['bias']"):
            np.testing.assert_allclose(np.asarray(u4), 4 * np.asarray(u1), rtol=1e-6)
        else:
            np.testing.assert_array_equal(np.asarray(u4), np.asarray(u1))
    assert any("BatchNorm" in n and n.endswith("['bias']") for n in names)
    assert any("BatchNorm" in n and n.endswith("['scale']") for n in names)     # BN scale keeps lr
    assert any("Conv" in n and n.endswith("['bias']") for n in names)


# Muon's quintic Newton-Schulz coefficients (Jordan's, optax's default) and its number of steps.
NS_COEFFS, NS_STEPS = (3.4445, -4.7750, 2.0315), 5


def _newton_schulz(g: np.ndarray) -> np.ndarray:
    """Muon's orthogonalisation, in float64 numpy: Frobenius-normalise, then 5 quintic steps
    X <- aX + (bA + cA^2)X with A = XX^T, on the wide orientation of the matrix."""
    x = g / (np.linalg.norm(g) + 1e-8)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    a, b, c = NS_COEFFS
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def _muon_problem():
    rng = np.random.default_rng(0)
    shapes = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "hidden": {"kernel": (4, 8)},
              "head": {"kernel": (8, 10), "bias": (10,)}}
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                          is_leaf=lambda s: isinstance(s, tuple))
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(2)]
    return params, grads


def test_newton_schulz_leaves_singular_values_near_one():
    # What the orthogonalisation is for: every singular value of the update close to 1 (Muon's
    # iteration trades exactness for speed: they land in about [0.7, 1.2], not exactly at 1,
    # and 5 steps lift singular values down to about 1/300 of the largest).
    g = np.random.default_rng(1).normal(size=(18, 4)) * np.array([10.0, 1.0, 0.3, 0.1])   # condition number about 100
    s = np.linalg.svd(_newton_schulz(g), compute_uv=False)
    assert np.all((s > 0.5) & (s < 1.5)), s


def test_muon_updates_equal_its_definition_over_two_steps():
    lr, aux_lr, beta, wd = 0.05, 0.003, 0.9, 0.01
    cfg = dataclasses.replace(TINY, optimizer="muon", lr=lr, muon_aux_lr=aux_lr, momentum=beta,
                              weight_decay=wd, schedule="constant")
    params, grads = _muon_problem()
    tx = step.make_optimizer(cfg, 10)
    state = tx.init(params)
    g1, g2 = (jax.tree.map(lambda v: np.asarray(v, np.float64), g) for g in grads)
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    for t, grad in enumerate(grads, start=1):
        updates, state = tx.update(grad, state, params)
        # Nesterov momentum with Adam-style bias correction: m_t = beta m_{t-1} + (1 - beta) g_t,
        # then beta m_t / (1 - beta^(t+1)) + (1 - beta) g_t / (1 - beta^t) is orthogonalised.
        for name, shape_to_matrix, fan in (("conv", (18, 4), (18, 4)), ("hidden", (4, 8), (4, 8))):
            gs = [g1[name]["kernel"], g2[name]["kernel"]][:t]
            m = sum((1 - beta) * beta ** (t - 1 - i) * g for i, g in enumerate(gs))
            nesterov = beta * m / (1 - beta ** (t + 1)) + (1 - beta) * gs[-1] / (1 - beta ** t)
            direction = _newton_schulz(nesterov.reshape(shape_to_matrix)).reshape(p[name]["kernel"].shape)
            scale = np.sqrt(max(1.0, fan[1] / fan[0]))
            expected = -lr * (scale * direction + wd * p[name]["kernel"])
            np.testing.assert_allclose(np.asarray(updates[name]["kernel"]), expected, rtol=2e-4, atol=2e-6)
        if t == 1:
            # The rest takes optax's Nesterov Adam (NAdam) without decay, whose first step is
            # -aux_lr (1 + b1 / (1 + b1)) g / (|g| + eps), b1 = 0.9: the head and every bias.
            for leaf, g in ((updates["head"]["kernel"], g1["head"]["kernel"]), (updates["head"]["bias"], g1["head"]["bias"]),
                            (updates["conv"]["bias"], g1["conv"]["bias"])):
                np.testing.assert_allclose(np.asarray(leaf), -aux_lr * (1 + 0.9 / 1.9) * g / (np.abs(g) + 1e-8),
                                           rtol=1e-5)


def test_muon_names_convolutions_and_hidden_dense_kernels_only():
    params = jax.jit(lambda k: models.create("seed003").init(k, jnp.zeros((1, 28, 28)), train=False))(
        jax.random.key(0))["params"]
    specs = jax.tree_util.tree_leaves_with_path(optim.muon_dimension_numbers(params, 10),
                                                   is_leaf=lambda s: s is None or isinstance(s, MuonDimensionNumbers))
    by_name = {jax.tree_util.keystr(path): spec for path, spec in specs}
    kernels = {n: s for n, s in by_name.items() if n.endswith("['kernel']")}
    head = [n for n, leaf in jax.tree_util.tree_leaves_with_path(params)
            if jax.tree_util.keystr(n).endswith("['kernel']") and leaf.shape[-1] == 10]
    assert len(head) == 1 and by_name[jax.tree_util.keystr(head[0])] is None
    assert sum(s is not None for s in kernels.values()) == len(kernels) - 1
    assert all(s is None for n, s in by_name.items() if not n.endswith("['kernel']"))


@pytest.mark.parametrize("name", models.names())
def test_muon_shape_rule_picks_exactly_the_head_of_every_zoo_model(name):
    # muon_dimension_numbers tells the head by its shape (c_out == the number of classes): that
    # holds only while no zoo model has another kernel with 10 outputs. Shapes suffice (eval_shape).
    shapes = jax.eval_shape(lambda k: models.create(name).init(k, jnp.zeros((1, 28, 28)), train=False),
                            jax.random.key(0))["params"]
    specs = optim.muon_dimension_numbers(shapes, 10)
    pairs = zip(jax.tree_util.tree_leaves_with_path(shapes),
                jax.tree.leaves(specs, is_leaf=lambda s: s is None or isinstance(s, MuonDimensionNumbers)))
    to_adam = [path for (path, leaf), spec in pairs if leaf.ndim >= 2 and spec is None]
    assert len(to_adam) == 1, [jax.tree_util.keystr(p) for p in to_adam]
    module = to_adam[0][0].key
    dense = sorted(int(k.key.split("_")[1]) for k in (p[0] for p, _ in jax.tree_util.tree_leaves_with_path(shapes))
                   if k.key.startswith("Dense_"))
    # The head: seed004_cnn names it, the others' is their last Dense.
    assert module == "logits" or module == f"Dense_{dense[-1]}"


def test_muon_trains_a_small_net():
    cfg = dataclasses.replace(TINY, model="speedrun", model_args={"widths": (8, 8, 8)}, optimizer="muon",
                              lr=0.05, epochs=3, batch=32)
    ds = make_dataset(n_train=256, n_test=64)
    x, y = np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    t = placed(cfg, x, y, np.arange(256), np.arange(256, 320))
    state = loop.init(*t)
    losses = [result.train_loss[0] for result, state in loop.epochs(*t, state)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
