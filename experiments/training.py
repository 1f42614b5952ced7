"""What experiments.cnn, experiments.sweep and experiments.evaluate share: flags, presets, and
one run of M members with checkpoints, automatic resume, a history and a test summary.

A run is the unit on disk: results/<run>/ (config.json, metrics.jsonl, summary.json, plots) and
checkpoints/<run>/ (the latest `RunState`, which carries every member's best).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from absl import flags

from experiments import common
from fmnist_jax import augment, checkpoint, data, ensemble, host_memory, models, report, sharding, train, trainer
from fmnist_jax.models import layers

FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", None, ["seed002", "seed003", "seed004_cnn", "seed004_resnet", "demo"],
                  "Set model, optimizer, split and augmentation as an earlier project did; explicit "
                  "flags still win.")
# Values experiments.sweep takes as comma lists (a grid); experiments.cnn takes one of each.
flags.DEFINE_list("model", ["seed002"], f"Model from the zoo: {', '.join(models.names())}.")
flags.DEFINE_list("batch", ["250"], "Training batch size.")
flags.DEFINE_list("lr", ["1e-3"], "Peak learning rate.")
flags.DEFINE_list("weight_decay", ["0"], "Weight decay (decoupled for adamw, L2 otherwise).")
flags.DEFINE_list("dropout_scale", ["1"], "Multiplies every dropout rate of the model (0: no dropout).")
flags.DEFINE_list("erase_p", ["0.5"], "Probability of random erasing per image.")
flags.DEFINE_list("label_smoothing", ["0"], "Label smoothing of the cross-entropy targets.")
flags.DEFINE_integer("epochs", 100, "Epochs to train (a resumed run continues up to this).")
flags.DEFINE_enum("optimizer", "adam", list(train.OPTIMIZERS), "Optimizer (optax).")
flags.DEFINE_enum("schedule", "constant", list(train.SCHEDULES), "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up (constant and cosine schedules).")
flags.DEFINE_string("augment", "flip,erase", f"Comma list from {', '.join(augment.TRANSFORMS)} (or none).")
flags.DEFINE_enum("split", "ordered", ["random", "stratified", "ordered"],
                  "Validation split: random, stratified, or ordered (the last share, as seed 002).")
flags.DEFINE_integer("eval_batch", 1000, "Evaluation batch size.")
flags.DEFINE_enum("conv_impl", "auto", list(layers.CONV_IMPLS),
                  "Convolution implementation: auto (hybrid on CPU, XLA elsewhere), xla, matmul or hybrid.")
flags.DEFINE_bool("overwrite", False, "Start the run from scratch, deleting its checkpoints.")
flags.DEFINE_integer("seeds", 1, "Members trained together as one vmapped program, with seeds "
                     "--seed, --seed+1, ...; the summary reports each, mean ± std and the ensemble.")
flags.DEFINE_bool("split_per_seed", False, "Each member draws its own train/validation split from "
                  "its seed (seed 003's protocol); otherwise all share the split of --seed.")
flags.DEFINE_enum("member_execution", "auto", list(trainer.MEMBER_EXECUTIONS),
                  "How members run inside the one program: vmap (batched; GPU/TPU, sharded members), "
                  "map (one after another; auto on CPU for several members).")
flags.DEFINE_bool("keep_freed_memory", True, "Linux: malloc keeps freed memory for reuse instead of "
                  "unmapping it (XLA CPU re-allocates its buffers every call; seed002 trained 8% faster here).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() first "
                  "(coordinator found automatically on TPU pods and SLURM).")

PRESETS = {
    # Seed 002: Adam, batch 250, 100 epochs, first 85% train / last 15% validation, flip + erasing.
    "seed002": dict(model="seed002", epochs=100, batch=250, optimizer="adam", lr=1e-3,
                    val_fraction=0.15, split="ordered", augment="flip,erase"),
    # Seed 003: 5 members on their own random 80/20 splits, batch 250, 80 epochs (its "2x
    # augmentation" is not specified; flip is the usual choice).
    "seed003": dict(model="seed003", epochs=80, batch=250, optimizer="adam", lr=1e-3,
                    val_fraction=0.2, split="random", augment="flip", split_per_seed=True),
    # Seed 004: 80/20 split, flip + shift/zoom + random erasing.
    "seed004_cnn": dict(model="seed004_cnn", epochs=50, batch=128, optimizer="adam", lr=1e-3,
                        val_fraction=0.2, split="random", augment="flip,shift_zoom,erase"),
    "seed004_resnet": dict(model="seed004_resnet", epochs=50, batch=128, optimizer="adam", lr=1e-3,
                           val_fraction=0.2, split="random", augment="flip,shift_zoom,erase"),
    # A couple of minutes on two CPU cores: seed 003's net, 2 epochs of the 48,000-image split.
    "demo": dict(model="seed003", epochs=2, batch=250, optimizer="adam", lr=1e-3, val_fraction=0.2,
                 split="random", augment="flip"),
}

# Config fields that may change between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = {"epochs"}


def flag_value(name: str):
    """The flag's value, or the preset's where the flag was not given explicitly."""
    if FLAGS.preset and name in PRESETS[FLAGS.preset] and FLAGS[name].using_default_value:
        return PRESETS[FLAGS.preset][name]
    value = FLAGS[name].value
    if name == "val_fraction" and value is None:
        return 0.15
    return value


def flag_list(name: str, cast=float) -> list:
    """A comma-list flag's values (preset applied), cast, distinct; one sentence on bad input."""
    raw = flag_value(name)
    raw = raw if isinstance(raw, (list, tuple)) else [raw]      # a preset or a test gives one value
    try:
        values = [cast(v) for v in raw]
    except ValueError:
        kind = "numbers" if cast is not str else "names"
        raise common.UsageError(f"--{name} must be a comma list of {kind}, got {','.join(map(str, raw))!r}.")
    if not values:
        raise common.UsageError(f"--{name} is empty.")
    if len(set(values)) != len(values):
        raise common.UsageError(f"--{name} lists a value twice.")
    return values


def flag_single(name: str, cast=float):
    """The one value of a comma-list flag in a script that trains one configuration."""
    values = flag_list(name, cast)
    if len(values) > 1:
        raise common.UsageError(f"--{name} takes one value here; use experiments.sweep for a grid.")
    return values[0]


def parse_augment(spec: str) -> tuple[str, ...]:
    try:
        return augment.parse(spec)
    except ValueError as e:
        raise common.UsageError(f"--augment: {e}") from e


def flag_names(message: str) -> str:
    """Library messages name concepts; the user typed flags."""
    for concept, flag in (("batch size", "--batch"), ("epochs must", "--epochs must"),
                          ("learning rate", "--lr"), ("validation fraction", "--val_fraction"),
                          ("weight decay", "--weight_decay"), ("dropout scale", "--dropout_scale"),
                          ("erasing probability", "--erase_p"), ("label smoothing", "--label_smoothing")):
        message = message.replace(concept, flag)
    return message


def make_config(**values) -> train.TrainConfig:
    """A validated TrainConfig from flag values (shared fields read from the flags)."""
    if flag_value("train_limit") < 0:
        raise common.UsageError("--train_limit must be 0 (all) or positive.")
    if flag_value("seeds") < 1:
        raise common.UsageError(f"--seeds must be at least 1, got {flag_value('seeds')}.")
    cfg = train.TrainConfig(
        epochs=flag_value("epochs"), optimizer=flag_value("optimizer"), schedule=flag_value("schedule"),
        warmup_epochs=flag_value("warmup_epochs"), augment=parse_augment(flag_value("augment")),
        val_fraction=flag_value("val_fraction"), split=flag_value("split"), seed=flag_value("seed"),
        train_limit=flag_value("train_limit"), eval_batch_size=flag_value("eval_batch"), **values)
    try:
        cfg.validate()
    except ValueError as e:
        raise common.UsageError(flag_names(str(e))) from e
    return cfg


def config_record(cfg: train.TrainConfig, members: Sequence[trainer.Member], split_per_seed: bool,
                  dataset: str, run_name: str) -> dict:
    """What config.json holds: enough to rebuild the run's trainer and to refuse a mismatched resume."""
    record = dataclasses.asdict(cfg) | {"dataset": dataset, "run_name": run_name,
                                        "split_per_seed": split_per_seed,
                                        "members": [m.as_dict() for m in members]}
    record["augment"] = list(cfg.augment)
    return record


def load_record(results_dir: str, run: str) -> tuple[train.TrainConfig, list[trainer.Member], dict]:
    """(config, members, the whole record) of a run from its config.json."""
    path = Path(results_dir) / run / "config.json"
    if not path.exists():
        raise common.UsageError(f"no run {run!r}: {path} does not exist (train it with experiments.cnn).")
    saved = json.loads(path.read_text())
    fields = {f: saved[f] for f in train.TrainConfig.__dataclass_fields__ if f in saved}
    fields["augment"] = tuple(fields.get("augment", ()))
    cfg = train.TrainConfig(**fields)
    members = [trainer.Member.from_dict(m) for m in saved.get("members", [{"seed": cfg.seed}])]
    return cfg, members, saved


def build_trainer(cfg: train.TrainConfig, members: Sequence[trainer.Member], ds: data.Dataset,
                  split_per_seed: bool) -> trainer.Trainer:
    """The run's Trainer: the (limited) training pool, each member's split, the member axis on the devices."""
    x, y = ds.x_train, ds.y_train
    if cfg.train_limit:
        x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    try:
        train_idx, val_idx = trainer.member_splits(y, cfg, [m.seed for m in members], split_per_seed)
        return trainer.Trainer(cfg, x, y, train_idx, val_idx, members,
                               member_execution=FLAGS.member_execution if FLAGS.is_parsed() else "auto")
    except ValueError as e:
        raise common.UsageError(flag_names(str(e))) from e


class ProgressBar:
    """A one-line progress bar on stderr while an epoch runs (only on a terminal)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.enabled = sys.stderr.isatty()

    def __call__(self, epoch: int, done: int, total: int) -> None:
        if self.enabled:
            filled = int(30 * done / total)
            sys.stderr.write(f"\repoch {epoch}/{self.epochs} [{'#' * filled}{' ' * (30 - filled)}] "
                             f"{done}/{total} steps")
            sys.stderr.flush()
            if done >= total:
                sys.stderr.write("\r" + " " * 70 + "\r")


def _check_resumable(saved: dict, record: dict, run: str) -> None:
    changed = sorted(k for k in record if saved.get(k) != record[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise common.UsageError(
            f"run {run!r} already exists with a different {', '.join(changed)}; pass another "
            "--run_name, or --overwrite to start it again.")


def _read_history(path: Path, up_to_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= up_to_epoch]


@dataclasses.dataclass
class TrainedRun:
    """A run after training: its trainer, final state, history and folders."""
    name: str
    trainer: trainer.Trainer
    state: trainer.RunState
    history: list[dict]
    out: Path
    dataset: data.Dataset
    n_params: int


def train_run(cfg: train.TrainConfig, members: Sequence[trainer.Member], run_name: str, *,
              split_per_seed: bool = False, dataset: str = "fashion_mnist", data_dir=None,
              checkpoint_dir: str = "checkpoints", results_dir: str = "results",
              overwrite: bool = False) -> TrainedRun:
    """Trains (or resumes) the members of a run, checkpointing every epoch; writes config.json
    and metrics.jsonl (one line per epoch: means over members, and each member's values)."""
    ds = data.load(dataset, data_dir)
    out = common.run_dir(results_dir, run_name)
    ckpt_path = Path(checkpoint_dir) / run_name
    record = config_record(cfg, members, split_per_seed, dataset, run_name)
    if overwrite:
        shutil.rmtree(ckpt_path, ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    elif (out / "config.json").exists() and ckpt_path.exists():
        _check_resumable(json.loads((out / "config.json").read_text()), record, run_name)
    t = build_trainer(cfg, members, ds, split_per_seed)
    common.write_json(out / "config.json", record)
    ckpts = checkpoint.RunCheckpoints(ckpt_path)
    start_epoch = ckpts.latest_epoch() or 0
    if start_epoch:
        state = ckpts.restore(start_epoch, t.abstract_state())
        common.log.info("resuming %s from epoch %d of %d", run_name, start_epoch, cfg.epochs)
    else:
        state = t.init()
    history = _read_history(out / "metrics.jsonl", start_epoch)
    n_params = sum(x[0].size for x in jax.tree.leaves(train.variables_of(state.train)))
    common.log.info("%s: %s x %d member%s, %s parameters each, %d train / %d validation images%s, "
                    "batch %d, %s, convolutions: %s, members: %s", run_name, cfg.model, t.n_members,
                    "s" if t.n_members > 1 else "", f"{n_params:,}", t.n_train, t.n_val,
                    " (own split per member)" if split_per_seed else "", cfg.batch_size,
                    sharding.describe(t.mesh), layers.resolve_conv_impl(),
                    t.execution_label)
    with open(out / "metrics.jsonl", "w") as f:  # rewritten: a resumed run drops epochs it repeats
        f.writelines(json.dumps(h) + "\n" for h in history)
    try:
        for result, state in t.epochs(state, start_epoch, ProgressBar(cfg.epochs)):
            ckpts.save(result.epoch, state)
            row = result.as_dict()
            history.append(row)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            common.log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f%s  lr %.2g  "
                            "%.1fs  %.0f img/s", result.epoch, cfg.epochs, row["train_loss"],
                            row["train_accuracy"], row["val_loss"], row["val_accuracy"],
                            f" (min {min(result.val_accuracy):.4f}, max {max(result.val_accuracy):.4f})"
                            if t.n_members > 1 else "", row["lr"], result.seconds, result.images_per_second)
    finally:
        ckpts.close()
    return TrainedRun(run_name, t, state, history, out, ds, n_params)


def test_scores(t: trainer.Trainer, variables, x_test, y_test) -> dict:
    """Ensemble scores (ensemble.score) of `variables` [M] on the test set, plain and with flip TTA."""
    logits = t.predict(variables, x_test)
    flipped = t.predict(variables, x_test, flip=True)
    return {"plain": ensemble.score(ensemble.member_probabilities(logits), y_test),
            "tta": ensemble.score(ensemble.member_probabilities(logits, flipped), y_test)}


def summarize(run: TrainedRun) -> dict:
    """Evaluates every member's best and final variables once on the test set; writes summary.json
    and history.png and prints the headline."""
    t, state = run.trainer, run.state
    x_test = t.replicate(run.dataset.x_test)
    best = test_scores(t, state.best, x_test, run.dataset.y_test)
    final = test_scores(t, train.variables_of(state.train), x_test, run.dataset.y_test)
    summary = {
        "run": run.name,
        "model": t.cfg.model,
        "parameters": run.n_params,
        "members": [m.as_dict() for m in t.members],
        "epochs": len(run.history),
        "best_epoch": np.asarray(state.best_epoch).tolist(),
        "best_val_accuracy": np.asarray(state.best_val_accuracy).tolist(),
        "test_accuracy_best": best["plain"]["mean_accuracy"],
        "test_accuracy_best_std": best["plain"]["std_accuracy"],
        "ensemble_test_accuracy_best": best["plain"]["ensemble_accuracy"],
        "test_accuracy_best_tta": best["tta"]["mean_accuracy"],
        "ensemble_test_accuracy_best_tta": best["tta"]["ensemble_accuracy"],
        "test_accuracy_final": final["plain"]["mean_accuracy"],
        "test": {"best": best["plain"], "best_tta": best["tta"], "final": final["plain"], "final_tta": final["tta"]},
        "train_seconds": sum(h["seconds"] for h in run.history),
        "median_images_per_second": float(np.median([h["images_per_second"] for h in run.history]))
        if run.history else None,
        "conv_impl": layers.resolve_conv_impl(),
        "devices": sharding.describe(t.mesh),
        "member_execution": t.execution_label,
        "malloc_keeps_freed_memory": host_memory.is_kept(),
        "environment": common.environment(),
    }
    common.write_json(run.out / "summary.json", summary)
    if run.history:
        report.plot_history(run.history, run.out / "history.png", title=f"{run.name} ({t.cfg.model})")
    print(headline(summary) + f" Results in {run.out}")
    return summary


def headline(summary: dict) -> str:
    """One line: best epochs and test accuracy (members, ensemble, TTA)."""
    test = summary["test"]
    if len(summary["members"]) == 1:
        return (f"{summary['run']}: best epoch {summary['best_epoch'][0]} (val "
                f"{summary['best_val_accuracy'][0]:.4f}) -> test accuracy {test['best']['mean_accuracy']:.4f}, "
                f"loss {test['best']['member_loss'][0]:.4f}; with flip TTA {test['best_tta']['mean_accuracy']:.4f}; "
                f"final state {test['final']['mean_accuracy']:.4f}.")
    return (f"{summary['run']}: {len(summary['members'])} members, best epochs {summary['best_epoch']} -> "
            f"test accuracy {test['best']['mean_accuracy']:.4f} ± {test['best']['std_accuracy']:.4f}, "
            f"ensemble {test['best']['ensemble_accuracy']:.4f}; with flip TTA "
            f"{test['best_tta']['mean_accuracy']:.4f} ± {test['best_tta']['std_accuracy']:.4f}, "
            f"ensemble {test['best_tta']['ensemble_accuracy']:.4f}.")


def setup(distributed: bool, keep_freed_memory: bool = True) -> None:
    """Per-process set-up of a training script: logging, malloc, and joining a multi-host run when asked."""
    common.setup_logging()
    if keep_freed_memory and host_memory.keep_freed_memory():
        common.log.info("malloc keeps freed memory for reuse (--nokeep_freed_memory to turn off)")
    if distributed:
        sharding.initialize_distributed()
