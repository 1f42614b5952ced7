"""Train a CNN from the zoo (one model or a seeded ensemble), with checkpoints, automatic resume
and a test report.

  python -m experiments.cnn --epochs=100 --batch=250                 # seed 002's net and recipe
  python -m experiments.cnn --preset=seed003 --seeds=5               # seed 003's protocol: 5 nets, own splits
  python -m experiments.cnn --preset=demo                            # a few minutes on a laptop CPU

--seeds=N trains N members (seeds --seed, --seed+1, ...) as one vmapped program. Re-running the
same command resumes from checkpoints/<run>/ (latest epoch). At the end every member's best
checkpoint (by its validation accuracy) and final state are evaluated once on the test set:
each member, mean ± std, and the ensemble (mean softmax), with and without flip TTA.
results/<run>/ holds config.json, metrics.jsonl, summary.json and history.png.
"""

from __future__ import annotations

from absl import app, flags

from experiments import common, training
from fmnist_jax import checkpoint, data, models, train, trainer
from fmnist_jax.models import layers

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "seed002", f"Model from the zoo: {', '.join(models.names())}.")
flags.DEFINE_integer("batch", 250, "Training batch size.")
flags.DEFINE_float("lr", 1e-3, "Peak learning rate.")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (decoupled for adamw, L2 otherwise).")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy targets.")
flags.DEFINE_float("erase_p", 0.5, "Probability of random erasing per image.")
flags.DEFINE_float("dropout_scale", 1.0, "Multiplies every dropout rate of the model (0: no dropout).")


def config_from_flags() -> train.TrainConfig:
    """The run's TrainConfig from the flags, with the preset under explicit flags."""
    return training.make_config(
        model=training.flag_value("model"), batch_size=training.flag_value("batch"),
        lr=training.flag_value("lr"), weight_decay=training.flag_value("weight_decay"),
        label_smoothing=training.flag_value("label_smoothing"), erase_p=training.flag_value("erase_p"),
        dropout_scale=training.flag_value("dropout_scale"))


def run(cfg: train.TrainConfig, run_name: str, *, seeds: int = 1, split_per_seed: bool = False,
        **options) -> dict:
    """Trains (or resumes) `seeds` members of `cfg`, evaluates them on the test set; returns the summary."""
    members = trainer.seed_members(cfg.seed, seeds)
    return training.summarize(training.train_run(cfg, members, run_name, split_per_seed=split_per_seed,
                                                 **options))


def main(argv):
    del argv
    try:
        training.setup(FLAGS.distributed)
        cfg = config_from_flags()
        seeds = training.flag_value("seeds")
        default_name = f"{cfg.model}_s{cfg.seed}" + (f"x{seeds}" if seeds > 1 else "")
        with layers.conv_impl(FLAGS.conv_impl):  # read while the programs are traced
            run(cfg, FLAGS.run_name or default_name, seeds=seeds,
                split_per_seed=training.flag_value("split_per_seed"), dataset=FLAGS.dataset,
                data_dir=FLAGS.data_dir, checkpoint_dir=FLAGS.checkpoint_dir,
                results_dir=FLAGS.results_dir, overwrite=FLAGS.overwrite)
    except (common.UsageError, data.DataError, checkpoint.CheckpointError, train.TrainingError) as e:
        common.fail(str(e))


if __name__ == "__main__":
    app.run(main)
