"""Train a CNN from the zoo (one network or a seeded ensemble), with checkpoints, automatic resume
and a test report.

  python -m experiments.cnn --epochs=100 --batch=250        # seed 002's net and recipe (one pass an epoch)
  python -m experiments.cnn --preset=seed003                # seed 003's protocol: 5 nets, own splits
  python -m experiments.cnn --preset=demo                   # a few minutes on a laptop CPU

Every flag is a field of fmnist_jax.config.TrainConfig (same name, default and help); --preset
starts from a named TrainConfig (fmnist_jax/presets) and explicit flags override it. --seeds=N
trains N members (seeds --seed, --seed+1, ...) as one program. Re-running the same command
resumes from checkpoints/<run>/. At the end every member's selected checkpoint (--select: best
validation accuracy or loss, or the final epoch) and final state are scored on the test set: each
member, mean ± std, and the ensemble, with and without the run's TTA views (--tta). results/<run>/ holds config.json, metrics.jsonl, summary.json and
history.png.
"""

from __future__ import annotations

import sys

from experiments import cli, progress
from fmnist_jax.config import TrainConfig
from fmnist_jax.evaluation import summary
from fmnist_jax.runs import interruption, pause_clock
from fmnist_jax.training import sharding, train


def define_flags(fv) -> None:
    cli.define_preset_flag(fv)
    cli.define_config_flags(fv, TrainConfig)
    cli.define_run_flags(fv)
    cli.define_process_flags(fv)
    cli.define_progress_flag(fv)


def config_from_flags(fv) -> TrainConfig:
    """The TrainConfig the flags describe (explicit flags over the preset over the defaults), checked
    before anything else happens (the library checks it again at its door)."""
    values = cli.config_values(fv, TrainConfig, base=cli.preset(fv))
    if fv["model"].present and not fv["model_args"].present:
        values["model_args"] = {}      # the preset's model_args are for the preset's model
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def main(fv, args) -> dict:
    cfg = config_from_flags(fv)
    process = cli.setup_process(fv)
    paths = cli.run_paths(fv, f"{cfg.model}_s{cfg.seed}" + (f"x{cfg.seeds}" if cfg.seeds > 1 else ""))
    invocation = {"command": cli.command_line(sys.modules[__name__], fv), "preset": fv.preset, **process}
    # The pause clock: a run SIGSTOPped to free the cores logs its working time, not the pause.
    with interruption.StopRequests() as stop, pause_clock.PauseClock() as clock:
        result = train.train_and_evaluate(cfg, paths, data_dir=fv.data_dir, overwrite=fv.overwrite,
                                          progress=progress.TrainingProgress(cfg.epochs, cfg.batch * cfg.seeds)
                                          if fv.progress and sharding.is_main_process() else None,
                                          stop=stop, invocation=invocation, clock=clock)
    if sharding.is_main_process():
        print(f"{summary.headline(result)} Results in {paths.results}")
    return result


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
