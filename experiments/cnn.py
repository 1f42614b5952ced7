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
from fmnist_jax import checkpoint, data, train, trainer
from fmnist_jax.models import layers

FLAGS = flags.FLAGS

def config_from_flags() -> train.TrainConfig:
    """The run's TrainConfig from the flags, with the preset under explicit flags."""
    return training.make_config(
        model=training.flag_single("model", str), batch_size=training.flag_single("batch", int),
        **{name: training.flag_single(name) for name in train.HPARAM_NAMES})


def run(cfg: train.TrainConfig, run_name: str, *, seeds: int = 1, split_per_seed: bool = False,
        **options) -> dict:
    """Trains (or resumes) `seeds` members of `cfg`, evaluates them on the test set; returns the summary."""
    members = trainer.seed_members(cfg.seed, seeds)
    return training.summarize(training.train_run(cfg, members, run_name, split_per_seed=split_per_seed,
                                                 **options))


def main(argv):
    del argv
    try:
        training.setup(FLAGS.distributed, FLAGS.keep_freed_memory)
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
