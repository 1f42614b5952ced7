r"""Hyper-parameter sweep: a grid x seeds trained as members of one program per shape.

  python -m experiments.sweep --model=seed003 --lr=3e-4,1e-3,3e-3 --label_smoothing=0,0.1 \
      --seeds=3 --epochs=10 --run_name=lr_ls

--lr, --weight_decay, --dropout_scale, --erase_p and --label_smoothing take comma lists whose
grid, times --seeds, becomes the members of one program. --model and --batch take comma lists
too; each combination is a separate program (results/<run>/<model>_b<batch>/). Every other flag
is experiments.cnn's. results/<run>/ gets sweep.json, sweep.txt (configurations by best
validation accuracy, mean ± std over seeds) and sweep.png; the best configuration's members are
then scored once on the test set.
"""

from __future__ import annotations

import dataclasses
import math
import sys

from experiments import cli, progress
from fmnist_jax.config import HPARAM_NAMES, TrainConfig
from fmnist_jax.runs import interruption
from fmnist_jax.training import sharding, sweep

LISTS = ("model", "batch") + HPARAM_NAMES


def define_flags(fv) -> None:
    cli.define_preset_flag(fv)
    cli.define_config_flags(fv, TrainConfig, lists=LISTS)
    cli.define_run_flags(fv)
    cli.define_process_flags(fv)
    cli.define_progress_flag(fv)


def main(fv, args) -> dict:
    values = cli.config_values(fv, TrainConfig, base=cli.preset(fv), lists=LISTS)
    lists = {name: values.pop(name) for name in LISTS}
    sweep.check_lists(lists)
    base = dataclasses.replace(TrainConfig(**values), **{name: lists[name][0] for name in LISTS})
    cli.setup_process(fv)
    paths = cli.run_paths(fv, "sweep")
    members = base.seeds * math.prod(len(lists[name]) for name in HPARAM_NAMES)    # of each program
    bar = (progress.TrainingProgress(base.epochs, base.batch * members)
           if fv.progress and sharding.is_main_process() else None)
    with interruption.StopRequests() as stop:
        result = sweep.sweep(base, paths, models=lists["model"], batches=lists["batch"],
                             hparams={name: lists[name] for name in HPARAM_NAMES},
                             data_dir=fv.data_dir, overwrite=fv.overwrite, stop=stop, progress=bar)
    best = result["best"]
    print(sweep.format_table(result["rows"], result["varied"]))
    print(f"best: {best['label']} (val {best['val_mean']:.4f} ± {best['val_std']:.4f}) -> test "
          f"{best['test']['mean_accuracy']:.4f} ± {best['test']['std_accuracy']:.4f}, ensemble "
          f"{best['test']['ensemble_accuracy']:.4f}. Results in {paths.results}")
    return result


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
