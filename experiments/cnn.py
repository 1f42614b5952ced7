"""Train a CNN from the zoo, with best/latest checkpoints, automatic resume and a test report.

  python -m experiments.cnn --epochs=100 --batch=250                 # seed 002's net and recipe
  python -m experiments.cnn --preset=seed003 --run_name=s003
  python -m experiments.cnn --preset=demo                            # a few minutes on a laptop CPU

Re-running the same command resumes from checkpoints/<run>/ (latest epoch). At the end the best
checkpoint (by validation accuracy) and the final state are evaluated once on the test set and
results/<run>/ holds config.json, metrics.jsonl, summary.json and history.png.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from experiments import common
from fmnist_jax import augment, checkpoint, data, models, report, train
from fmnist_jax.models import layers

FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", None, ["seed002", "seed003", "seed004_cnn", "seed004_resnet", "demo"],
                  "Set model, optimizer, split and augmentation as an earlier project did; explicit "
                  "flags still win.")
flags.DEFINE_string("model", "seed002", f"Model from the zoo: {', '.join(models.names())}.")
flags.DEFINE_integer("epochs", 100, "Epochs to train (a resumed run continues up to this).")
flags.DEFINE_integer("batch", 250, "Training batch size.")
flags.DEFINE_enum("optimizer", "adam", list(train.OPTIMIZERS), "Optimizer (optax).")
flags.DEFINE_float("lr", 1e-3, "Peak learning rate.")
flags.DEFINE_enum("schedule", "constant", list(train.SCHEDULES), "Learning-rate schedule.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up (constant and cosine schedules).")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (decoupled for adamw, L2 otherwise).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy targets.")
flags.DEFINE_string("augment", "flip,erase", f"Comma list from {', '.join(augment.TRANSFORMS)} (or none).")
flags.DEFINE_float("erase_p", 0.5, "Probability of random erasing per image.")
flags.DEFINE_enum("split", "ordered", ["random", "stratified", "ordered"],
                  "Validation split: random, stratified, or ordered (the last share, as seed 002).")
flags.DEFINE_integer("eval_batch", 1000, "Evaluation batch size.")
flags.DEFINE_enum("conv_impl", "auto", list(layers.CONV_IMPLS),
                  "Convolution implementation: auto (matmul on CPU, XLA elsewhere), xla or matmul.")
flags.DEFINE_bool("overwrite", False, "Start the run from scratch, deleting its checkpoints.")

PRESETS = {
    # Seed 002: Adam, batch 250, 100 epochs, first 85% train / last 15% validation, flip + erasing.
    "seed002": dict(model="seed002", epochs=100, batch=250, optimizer="adam", lr=1e-3,
                    val_fraction=0.15, split="ordered", augment="flip,erase"),
    # Seed 003: batch 250, 80 epochs, random 80/20 split (its "2x augmentation" is not specified).
    "seed003": dict(model="seed003", epochs=80, batch=250, optimizer="adam", lr=1e-3,
                    val_fraction=0.2, split="random", augment="flip"),
    # Seed 004: 80/20 split, flip + shift/zoom + random erasing.
    "seed004_cnn": dict(model="seed004_cnn", epochs=50, batch=128, optimizer="adam", lr=1e-3,
                        val_fraction=0.2, split="random", augment="flip,shift_zoom,erase"),
    "seed004_resnet": dict(model="seed004_resnet", epochs=50, batch=128, optimizer="adam", lr=1e-3,
                           val_fraction=0.2, split="random", augment="flip,shift_zoom,erase"),
    # A couple of minutes on two CPU cores: seed 003's net, 2 epochs of the 48,000-image split.
    "demo": dict(model="seed003", epochs=2, batch=250, optimizer="adam", lr=1e-3, val_fraction=0.2,
                 split="random", augment="flip"),
}

# Fields that may change between a run and its resumption (everything else must match).
RESUMABLE_CHANGES = {"epochs"}


def effective_flags() -> dict:
    """Flag values with the preset applied under any flag given explicitly."""
    values = {name: FLAGS[name].value for name in (
        "model", "epochs", "batch", "optimizer", "lr", "schedule", "warmup_epochs", "weight_decay",
        "label_smoothing", "augment", "erase_p", "val_fraction", "split", "seed", "train_limit", "eval_batch")}
    if values["val_fraction"] is None:
        values["val_fraction"] = 0.15
    if FLAGS.preset:
        for name, value in PRESETS[FLAGS.preset].items():
            if FLAGS[name].using_default_value:
                values[name] = value
    return values


def config_from_flags() -> train.TrainConfig:
    v = effective_flags()
    if v["train_limit"] < 0:
        raise common.UsageError("--train_limit must be 0 (all) or positive.")
    cfg = train.TrainConfig(
        model=v["model"], epochs=v["epochs"], batch_size=v["batch"], optimizer=v["optimizer"],
        lr=v["lr"], schedule=v["schedule"], warmup_epochs=v["warmup_epochs"],
        weight_decay=v["weight_decay"], label_smoothing=v["label_smoothing"],
        augment=_parse_augment(v["augment"]),
        erase_p=v["erase_p"], val_fraction=v["val_fraction"], split=v["split"], seed=v["seed"],
        train_limit=v["train_limit"], eval_batch_size=v["eval_batch"])
    try:
        cfg.validate()
    except ValueError as e:
        raise common.UsageError(_flag_names(str(e))) from e
    return cfg


def _parse_augment(spec: str) -> tuple[str, ...]:
    try:
        return augment.parse(spec)
    except ValueError as e:
        raise common.UsageError(f"--augment: {e}") from e


def _flag_names(message: str) -> str:
    # Library messages name concepts; the user typed flags.
    return (message.replace("batch size", "--batch").replace("epochs must", "--epochs must")
            .replace("learning rate", "--lr").replace("validation fraction", "--val_fraction"))


def split_dataset(cfg: train.TrainConfig, ds: data.Dataset):
    """(x_train, y_train, x_val, y_val) from the training set, as the config's split says."""
    x, y = ds.x_train, ds.y_train
    if cfg.train_limit:
        x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    tr, va = data.train_val_split(y, cfg.val_fraction, cfg.seed, shuffle=cfg.split != "ordered",
                                  stratify=cfg.split == "stratified")
    return x[tr], y[tr], x[va], y[va]


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


def _check_resumable(saved: dict, cfg: dict, run: str) -> None:
    changed = sorted(k for k in cfg if saved.get(k) != cfg[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise common.UsageError(
            f"run {run!r} already exists with a different {', '.join(changed)}; pass another "
            "--run_name, or --overwrite to start it again.")


def _read_history(path: Path, up_to_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= up_to_epoch]


def run(cfg: train.TrainConfig, run_name: str, *, dataset: str = "fashion_mnist", data_dir=None,
        checkpoint_dir: str = "checkpoints", results_dir: str = "results", overwrite: bool = False) -> dict:
    """Trains (or resumes) a run, evaluates it on the test set, writes its files; returns the summary."""
    ds = data.load(dataset, data_dir)
    x_train, y_train, x_val, y_val = split_dataset(cfg, ds)
    out = common.run_dir(results_dir, run_name)
    ckpt_path = Path(checkpoint_dir) / run_name
    config_dict = dataclasses.asdict(cfg) | {"dataset": dataset, "run_name": run_name}
    config_dict["augment"] = list(cfg.augment)
    if overwrite:
        shutil.rmtree(ckpt_path, ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    elif (out / "config.json").exists() and ckpt_path.exists():
        _check_resumable(json.loads((out / "config.json").read_text()), config_dict, run_name)
    try:
        trainer = train.Trainer(cfg, x_train, y_train, x_val, y_val)
    except ValueError as e:
        raise common.UsageError(_flag_names(str(e))) from e
    common.write_json(out / "config.json", config_dict)
    ckpts = checkpoint.RunCheckpoints(ckpt_path)
    state = trainer.init()
    start_epoch = ckpts.latest_epoch() or 0
    if start_epoch:
        state = ckpts.restore(start_epoch, state)
        common.log.info("resuming %s from epoch %d of %d", run_name, start_epoch, cfg.epochs)
    history = _read_history(out / "metrics.jsonl", start_epoch)
    n_params = sum(x.size for x in jax.tree.leaves((state.params, state.batch_stats)))
    common.log.info("%s: %s, %s parameters, %d train / %d validation images, batch %d, %s, "
                    "convolutions: %s", run_name, cfg.model, f"{n_params:,}", len(y_train), len(y_val),
                    cfg.batch_size, jax.devices()[0].platform, layers.resolve_conv_impl())
    with open(out / "metrics.jsonl", "w") as f:  # rewritten: a resumed run drops epochs it repeats
        f.writelines(json.dumps(h) + "\n" for h in history)
    for result, state in trainer.epochs(state, start_epoch, ProgressBar(cfg.epochs)):
        ckpts.save(result.epoch, state, result.val_accuracy)
        history.append(result.as_dict())
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(result.as_dict()) + "\n")
        common.log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.2g  "
                        "%.1fs  %.0f img/s", result.epoch, cfg.epochs, result.train_loss,
                        result.train_accuracy, result.val_loss, result.val_accuracy, result.lr,
                        result.seconds, result.images_per_second)
    summary = _final_report(trainer, ckpts, state, ds, history, out, run_name, n_params)
    ckpts.close()
    return summary


def _final_report(trainer, ckpts, final_state, ds, history, out: Path, run_name: str, n_params: int) -> dict:
    best_epoch = ckpts.best_epoch()
    best_state = ckpts.restore(best_epoch, final_state)
    x_test, y_test = jax.device_put(ds.x_test), jax.device_put(ds.y_test.astype(np.int32))
    test_best = trainer.evaluate(train.variables_of(best_state), x_test, y_test)
    test_final = trainer.evaluate(train.variables_of(final_state), x_test, y_test)
    summary = {
        "run": run_name,
        "model": trainer.cfg.model,
        "parameters": n_params,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "best_val_accuracy": ckpts.metrics(best_epoch).get("val_accuracy"),
        "test_accuracy_best": test_best["accuracy"],
        "test_loss_best": test_best["loss"],
        "test_accuracy_final": test_final["accuracy"],
        "test_loss_final": test_final["loss"],
        "train_seconds": sum(h["seconds"] for h in history),
        "median_images_per_second": float(np.median([h["images_per_second"] for h in history])) if history else None,
        "conv_impl": layers.resolve_conv_impl(),
        "environment": common.environment(),
    }
    common.write_json(out / "summary.json", summary)
    if history:
        report.plot_history(history, out / "history.png", title=f"{run_name} ({trainer.cfg.model})")
    print(f"{run_name}: best epoch {best_epoch} (val {summary['best_val_accuracy']:.4f}) -> "
          f"test accuracy {test_best['accuracy']:.4f}, loss {test_best['loss']:.4f}; final state "
          f"test accuracy {test_final['accuracy']:.4f}. Results in {out}")
    return summary


def main(argv):
    del argv
    common.setup_logging()
    try:
        cfg = config_from_flags()
        with layers.conv_impl(FLAGS.conv_impl):  # read while the programs are traced
            run(cfg, FLAGS.run_name or f"{cfg.model}_s{cfg.seed}", dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, checkpoint_dir=FLAGS.checkpoint_dir,
                results_dir=FLAGS.results_dir, overwrite=FLAGS.overwrite)
    except (common.UsageError, data.DataError, checkpoint.CheckpointError, train.TrainingError) as e:
        common.fail(str(e))


if __name__ == "__main__":
    app.run(main)
