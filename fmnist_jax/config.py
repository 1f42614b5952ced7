"""The one description of a training run: `TrainConfig`, its defaults, its help and its checks.

Every field has a default and a help text (field metadata); the command-line flags of
`experiments.cnn` and `experiments.sweep` are generated from these fields, so a flag has its
field's name, default and help, and `TrainConfig()` is exactly what a command without flags
trains (seed 002's net and recipe). Presets (`fmnist_jax.presets`) are `TrainConfig` values.

`validate()` raises `ConfigError(field, problem)`: the error knows the field, and therefore the
flag, that holds the impossible value.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from flax.core import FrozenDict

from fmnist_jax import models
from fmnist_jax.data import augment as augment_lib
from fmnist_jax.data import datasets
from fmnist_jax.errors import ConfigError
from fmnist_jax.evaluation import tta
from fmnist_jax.models import layers

OPTIMIZERS = ("adam", "adamw", "sgd", "muon")
SCHEDULES = ("constant", "cosine", "onecycle")
SPLITS = ("random", "stratified", "ordered")
MEMBER_EXECUTIONS = ("auto", "vmap", "map")
SELECTIONS = ("val_accuracy", "val_loss", "final")

# Hyper-parameters that do not change shapes: members of one program may each have their own
# (they live in the training state as arrays, see train.HParams), so a sweep grids over them.
HPARAM_NAMES = ("lr", "weight_decay", "dropout_scale", "erase_p", "label_smoothing")

# Fields that say how a run executes, not what it computes (results agree to float rounding):
# a resumed run may change them.
EXECUTION_FIELDS = ("eval_batch", "conv_impl", "member_execution")
# `tta` changes only the final test report, not training.
RESUMABLE_FIELDS = ("epochs", "tta") + EXECUTION_FIELDS


def _field(default, help: str, choices: tuple | None = None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in its config.json).

    The defaults are seed 002's recipe as its README tells it: its net, Adam at 1e-3, batch 250,
    100 epochs, the first 85% of the training images to train on and the last 15% to validate,
    flip + random erasing drawn anew every epoch. `--preset=seed002` is the protocol of its code.
    """
    # What is trained, on what.
    model: str = _field("seed002", "Network from the zoo.", tuple(models.names()))
    model_args: Mapping[str, Any] = _field(FrozenDict(), "The network's keyword arguments, as a JSON object "
                                           "(e.g. {\"widths\": [32, 64, 128], \"activation\": \"relu\"} "
                                           "for speedrun); {}: the zoo's defaults.")
    dataset: str = _field("fashion_mnist", "Dataset.", datasets.DATASETS)
    train_limit: int = _field(0, "Use only the first N training images (0: all).")
    # The optimisation.
    epochs: int = _field(100, "Epochs to train (a resumed run continues up to this).")
    batch: int = _field(250, "Training batch size.")
    epoch_passes: int = _field(1, "Passes over the training split in one epoch, each in a fresh order "
                               "with fresh augmentations (seed 002's epoch was every image three times).")
    optimizer: str = _field("adam", "adam (L2 through the gradient, as Keras), adamw (decoupled "
                            "decay), sgd (Nesterov momentum) or muon (orthogonalised Nesterov momentum "
                            "for the convolution and hidden dense kernels, decoupled decay; Adam at "
                            "muon_aux_lr for biases, norms and the head).", OPTIMIZERS)
    lr: float = _field(1e-3, "Peak learning rate.")
    adam_eps: float = _field(1e-8, "Epsilon of adam and adamw (optax and Keras 2.0: 1e-8; tf.keras: 1e-7); "
                           "muon's Adam for the other parameters keeps optax's 1e-8.")
    schedule: str = _field("constant", "Learning-rate schedule.", SCHEDULES)
    warmup_epochs: float = _field(0.0, "Linear learning-rate warm-up in epochs (constant and cosine).")
    weight_decay: float = _field(0.0, "Weight decay (decoupled for adamw and muon, L2 for adam and sgd).")
    momentum: float = _field(0.9, "Momentum of sgd and muon.")
    muon_aux_lr: float = _field(3e-3, "muon: the peak learning rate of its Adam (biases, batch-norm "
                                "scales and shifts, the classifier head), on the same schedule as lr.")
    bias_lr_scale: float = _field(1.0, "Multiplies the learning rate of every bias and batch-norm "
                                  "shift (beta); the kernels keep lr.")
    ema_decay: float = _field(0.0, "Decay of an exponential moving average of the parameters, which "
                              "validation, best-epoch selection, test, predict and export then use "
                              "(0: off). The decay at step t is min(ema_decay, (1 + t) / (10 + t)).")
    # Regularisation.
    l2: float = _field(0.0, "Keras-style L2 regularisation: adds l2 * (sum of squares) of the kernels the "
                       "model marks as regularized (its `regularized` method) to the training and "
                       "validation loss (0: off). Unlike weight_decay, it touches those kernels only.")
    dropout_scale: float = _field(1.0, "Multiplies every dropout rate of the model (0: no dropout).")
    label_smoothing: float = _field(0.0, "Label smoothing of the cross-entropy targets.")
    augment: tuple[str, ...] = _field(("flip", "erase"), "Training augmentations, in this order "
                                      "(none: no augmentation).", augment_lib.TRANSFORMS)
    erase_p: float = _field(0.5, "Probability of random erasing per image.")
    translate_pixels: int = _field(2, "Largest shift of the translate augmentation along each axis, in "
                                   "pixels (uniform integer shifts, background fill).")
    erase_area: tuple[float, ...] = _field((0.02, 0.4), "Random erasing: the rectangle's area, as a "
                                           "range of fractions of the image.")
    erase_aspect: tuple[float, ...] = _field((0.3, 1 / 0.3), "Random erasing: the range of the "
                                             "rectangle's height / width.")
    erase_fill: str = _field("pixel", "Random erasing fills the rectangle with uniform values in "
                             "[0, erase_max]: one per pixel, or one for the whole rectangle.",
                             augment_lib.ERASE_FILLS)
    erase_max: float = _field(1.0, "Random erasing: the largest fill value (1: white).")
    erase_sampler: str = _field("fit", "Random erasing's rectangle: fit (a size that fits, then a "
                                "position where it fits) or reject (a size and a corner, redrawn "
                                "together until the rectangle fits, as the Keras projects' eraser).",
                                augment_lib.ERASE_SAMPLERS)
    rotate_degrees: float = _field(10.0, "rotate: the largest angle, in degrees (nearest-neighbour, "
                                   "edge fill).")
    vshift_fraction: float = _field(0.2, "vshift: the largest vertical shift, as a fraction of the "
                                    "height (bilinear, edge fill).")
    brightness_range: tuple[float, ...] = _field((0.5, 1.5), "brightness: the range of the factor "
                                                 "applied after stretching each image to a maximum of 1.")
    fixed_copies: int = _field(0, "Augmented copies of every training image made once, before "
                               "training, with copy_augment (the Keras notebooks' offline "
                               "augmentation); the pool of originals and copies is then the training "
                               "set (0: none).")
    copy_augment: tuple[str, ...] = _field(("flip",), "The augmentations of the fixed copies.",
                                           augment_lib.TRANSFORMS)
    copies_before_split: bool = _field(False, "Make the fixed copies of every image before the "
                                       "validation split (seed 003: copies may validate while "
                                       "their original trains); otherwise of the training split only.")
    tta: str = _field("flip", "Test-time augmentation of the final test report (summary.json): the "
                      "softmax averaged over these views of each image. none, flip (mirror) or "
                      "flip_shift (mirror and diagonal ±1-pixel shifts), flip_cross, flip_ring, flip_diag2 "
                      "(fmnist_jax.evaluation.tta).", tuple(tta.VIEWS))
    # Validation split and members.
    val_fraction: float = _field(0.15, "Share of the training images held out for validation "
                                 "(model selection: each member keeps its best-validation epoch); 0 "
                                 "trains on every image and needs select=final.")
    split: str = _field("ordered", "Which images validate: random, stratified (the same share of "
                        "every class) or ordered (the last share, as seed 002).", SPLITS)
    seed: int = _field(0, "Random seed of the first member (init, shuffling, augmentation, dropout "
                       "and a random split); member i has seed + i.")
    seeds: int = _field(1, "Members: this many networks with consecutive random seeds, trained "
                        "together as one program; the summary gives each, mean ± std and their "
                        "ensemble.")
    split_per_seed: bool = _field(False, "Each member draws its own validation split from its "
                                  "seed; otherwise all share the split of seed.")
    data_seed: int = _field(-1, "Seed of the validation split and of the fixed copies (-1: the run's "
                            "seed): members trained as separate runs share their data with it.")
    val_every: int = _field(1, "Validate every N epochs and after the last one; only validated epochs "
                            "compete for the best (a value >= epochs: the last epoch only). Validation "
                            "costs a forward pass over the split each time.")
    select: str = _field("val_accuracy", "What picks each member's best epoch (the checkpoint the "
                         "summary scores first): the highest validation accuracy, the lowest "
                         "validation loss, or none: final scores the last epoch's state (the "
                         "protocol that retrains on all the data, with val_fraction=0).", SELECTIONS)
    # How it executes (the same results to float rounding).
    eval_batch: int = _field(1000, "Evaluation batch size.")
    conv_impl: str = _field("auto", "Convolution implementation: auto (winograd on CPU, "
                            "xla elsewhere), xla, matmul, hybrid or winograd. The parameters are the same for all.",
                            layers.CONV_IMPLS)
    member_execution: str = _field("auto", "How several members run in one program: vmap "
                                   "(batched; GPU/TPU and sharded members), map (one after "
                                   "another) or auto (map on one CPU, vmap otherwise).",
                                   MEMBER_EXECUTIONS)

    def __post_init__(self):
        # A former zoo name (models.FORMER_NAMES, in committed records and their commands) becomes
        # its family and the arguments it stood for; the arguments are made immutable (hashable).
        name, args = self.model, freeze_args(self.model_args)
        if name in models.FORMER_NAMES:
            name, args = models.resolve(name, args)
        object.__setattr__(self, "model", name)
        object.__setattr__(self, "model_args", freeze_args(args))

    def validate(self) -> None:
        """Raises ConfigError naming the first field with an impossible value."""
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            unknown = [v for v in values if choices is not None and v not in choices]
            if unknown:
                raise ConfigError(f.name, f"does not know {unknown[0]!r}; choose from {', '.join(choices)}.")
        for name in ("epochs", "batch", "eval_batch", "seeds", "epoch_passes", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}.")
        if self.train_limit < 0:
            raise ConfigError("train_limit", f"must be 0 (all) or positive, got {self.train_limit}.")
        if not self.warmup_epochs >= 0:
            raise ConfigError("warmup_epochs", f"must be at least 0, got {self.warmup_epochs}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in [0, 1), got {self.val_fraction}.")
        if self.val_fraction == 0 and self.select != "final":
            raise ConfigError("val_fraction", f"0 leaves nothing to validate, so nothing can pick the "
                                              f"{self.select} epoch: add --select=final (score the last "
                                              "epoch) or hold out a share.")
        if "flip" in self.augment and "alt_flip" in self.augment:
            raise ConfigError("augment", "has both flip and alt_flip, which both mirror images; choose one.")
        if not 1 <= self.translate_pixels <= 13:
            raise ConfigError("translate_pixels", f"must be in 1..13, got {self.translate_pixels}.")
        if not self.bias_lr_scale > 0:
            raise ConfigError("bias_lr_scale", f"must be positive, got {self.bias_lr_scale}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must be in [0, 1) (0: off), got {self.ema_decay}.")
        if self.fixed_copies < 0:
            raise ConfigError("fixed_copies", f"must be 0 (none) or positive, got {self.fixed_copies}.")
        if self.fixed_copies and set(self.copy_augment) & augment_lib.NEEDS_WHERE:
            raise ConfigError("copy_augment", "cannot use alt_flip: a fixed copy has no epoch; use flip.")
        if self.fixed_copies and self.split_per_seed:
            raise ConfigError("fixed_copies", "are made once for the run, so every member must share "
                                              "the split: drop split_per_seed.")
        for name, bounds in (("erase_area", (0.0, 1.0)), ("erase_aspect", (0.0, float("inf"))),
                             ("brightness_range", (0.0, float("inf")))):
            low, high = (getattr(self, name) + (None, None))[:2]
            if len(getattr(self, name)) != 2 or not bounds[0] < low <= high <= bounds[1]:
                raise ConfigError(name, f"must be two numbers low,high with {bounds[0]} < low <= high"
                                        f"{' <= 1' if bounds[1] == 1 else ''}, got {getattr(self, name)}.")
        if not 0.0 < self.erase_max <= 1.0:
            raise ConfigError("erase_max", f"must be in (0, 1], got {self.erase_max}.")
        if not 0.0 <= self.rotate_degrees <= 180.0:
            raise ConfigError("rotate_degrees", f"must be in [0, 180], got {self.rotate_degrees}.")
        if not 0.0 <= self.vshift_fraction < 1.0:
            raise ConfigError("vshift_fraction", f"must be in [0, 1), got {self.vshift_fraction}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("momentum", f"must be in [0, 1), got {self.momentum}.")
        if not self.muon_aux_lr > 0:
            raise ConfigError("muon_aux_lr", f"must be positive, got {self.muon_aux_lr}.")
        if not self.adam_eps > 0:
            raise ConfigError("adam_eps", f"must be positive, got {self.adam_eps}.")
        if not self.l2 >= 0:
            raise ConfigError("l2", f"must be at least 0, got {self.l2}.")
        if self.data_seed < -1:
            raise ConfigError("data_seed", f"must be -1 (the run's seed) or a seed, got {self.data_seed}.")
        if self.split_per_seed and self.split == "ordered":
            raise ConfigError("split", "'ordered' gives every member the same images, so it cannot be "
                                       "split per seed; use random or stratified.")
        check_hparams(**{name: getattr(self, name) for name in HPARAM_NAMES})
        try:
            model = models.create(self.model, **self.model_args)
        except (models.UnknownModelError, TypeError, ValueError) as e:
            raise ConfigError("model_args", f"does not suit {self.model}: {e}") from None
        if self.l2 and not hasattr(model, "regularized"):
            raise ConfigError("l2", f"needs a model that marks its regularized kernels; {self.model} marks "
                                    "none (use weight_decay).")


def check_hparams(lr, weight_decay, dropout_scale, erase_p, label_smoothing) -> None:
    """Raises ConfigError for an impossible hyper-parameter value (one member's or the config's)."""
    if not lr > 0:
        raise ConfigError("lr", f"must be positive, got {lr}.")
    if not weight_decay >= 0:
        raise ConfigError("weight_decay", f"must be at least 0, got {weight_decay}.")
    if not dropout_scale >= 0:
        raise ConfigError("dropout_scale", f"must be at least 0, got {dropout_scale}.")
    if not 0.0 <= erase_p <= 1.0:
        raise ConfigError("erase_p", f"must be in [0, 1], got {erase_p}.")
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError("label_smoothing", f"must be in [0, 1), got {label_smoothing}.")


def fields() -> tuple[dataclasses.Field, ...]:
    """TrainConfig's fields, in order (name, type, default, metadata help/choices)."""
    return dataclasses.fields(TrainConfig)


def freeze_args(args: Mapping[str, Any] | None) -> FrozenDict:
    """Model arguments as an immutable mapping, lists (from JSON) as tuples, keys sorted."""
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v
    return FrozenDict({k: freeze(v) for k, v in sorted(dict(args or {}).items())})


def parse_model_args(text: str) -> FrozenDict:
    """--model_args: a JSON object (ConfigError("model_args", ...) for anything else)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError("model_args", f"must be a JSON object such as '{{\"widths\": [32, 64, 128]}}', got {text!r}.")
    return freeze_args(value)


def as_record(cfg: TrainConfig) -> dict[str, Any]:
    """A config dataclass (TrainConfig, KnnConfig) as JSON-ready values (tuples as lists, mappings as dicts)."""
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def from_record(record: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a config.json record (extra keys ignored, missing fields defaulted)."""
    known = {f.name: f for f in fields()}
    values = {}
    for key, value in record.items():
        if key in known:
            values[key] = tuple(value) if isinstance(known[key].default, tuple) else value
    return TrainConfig(**values)
