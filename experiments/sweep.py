"""Hyper-parameter sweep: a grid x seeds trained as vmapped members, one program per shape.

  python -m experiments.sweep --model=seed003 --lr=3e-4,1e-3,3e-3 --label_smoothing=0,0.1 \
      --seeds=3 --epochs=10 --run_name=lr_ls

Values that do not change shapes (--lr, --weight_decay, --dropout_scale, --erase_p,
--label_smoothing) are comma lists whose grid, times --seeds, becomes the members of one
program: the hyper-parameters are arrays in each member's state. Values that change shapes
(--model, --batch) are comma lists too; each combination is a separate program (and a run
under results/<run>/<model>_b<batch>/). Every other flag is as in experiments.cnn.

Output in results/<run>/: sweep.json and sweep.txt (configurations sorted by best validation
accuracy, mean ± std over seeds) and sweep.png; the best configuration's members are then
evaluated once on the test set (mean ± std and their ensemble).
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
from absl import app, flags

from experiments import common, training
from fmnist_jax import checkpoint, data, report, train, trainer
from fmnist_jax.models import layers

FLAGS = flags.FLAGS

def hparam_grid() -> list[dict]:
    """Every combination of the shape-free comma lists, as {name: value} dicts."""
    lists = {name: training.flag_list(name) for name in train.HPARAM_NAMES}
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def swept_names() -> list[str]:
    return [name for name in train.HPARAM_NAMES if len(training.flag_list(name)) > 1]


def grid_members(grid: list[dict], first_seed: int, seeds: int) -> list[trainer.Member]:
    """Members for grid x seeds: configuration-major, so configuration i holds members i*seeds ... ."""
    return [trainer.Member(first_seed + s, point) for point in grid for s in range(seeds)]


def rank(groups: list[tuple[str, int, list[dict], training.TrainedRun]], seeds: int, varied: list[str]) -> list[dict]:
    """One row per configuration with its members' best validation accuracies; best first."""
    rows = []
    for model, batch, grid, run in groups:
        best_val = np.asarray(run.state.best_val_accuracy)
        best_epoch = np.asarray(run.state.best_epoch)
        for i, point in enumerate(grid):
            members = slice(i * seeds, (i + 1) * seeds)
            vals = best_val[members]
            label = ", ".join([f"{model} b{batch}"] * bool(len(groups) > 1) +
                              [f"{name}={point[name]:g}" for name in varied]) or f"{model} b{batch}"
            rows.append({"model": model, "batch": batch, **point, "label": label, "run": run.name,
                         "members": list(range(members.start, members.stop)),
                         "val_mean": float(vals.mean()), "val_std": float(vals.std(ddof=1)) if seeds > 1 else 0.0,
                         "val_accuracy": vals.tolist(), "best_epoch": best_epoch[members].tolist()})
    return sorted(rows, key=lambda r: -r["val_mean"])


def format_table(rows: list[dict], varied: list[str]) -> str:
    columns = ["model", "batch"] + varied
    lines = ["  ".join(f"{c:>14}" for c in columns + ["val mean", "val std", "best epochs"])]
    for r in rows:
        cells = [f"{r[c]:>14}" if isinstance(r[c], str) else f"{r[c]:>14g}" for c in columns]
        lines.append("  ".join(cells + [f"{r['val_mean']:>14.4f}", f"{r['val_std']:>14.4f}",
                                        f"{str(r['best_epoch']):>14}"]))
    return "\n".join(lines)


def sweep(run_name: str, **options) -> dict:
    """Trains every shape group of the grid, ranks the configurations, tests the best once."""
    models_, batches = training.flag_list("model", str), training.flag_list("batch", int)
    seeds = training.flag_value("seeds")
    grid = hparam_grid()
    varied = swept_names()
    # Everything is checked before anything trains: every configuration, then every grid value.
    plans = [training.make_config(model=model, batch_size=batch, **grid[0])
             for model, batch in itertools.product(models_, batches)]
    try:
        for point in grid:
            train.HParams.create(plans[0], **point)
    except ValueError as e:
        raise common.UsageError(training.flag_names(str(e))) from e
    groups = []
    for cfg in plans:
        model, batch = cfg.model, cfg.batch_size
        members = grid_members(grid, cfg.seed, seeds)
        common.log.info("sweep %s: %s batch %d, %d configurations x %d seeds = %d members in one program",
                        run_name, model, batch, len(grid), seeds, len(members))
        run = training.train_run(cfg, members, f"{run_name}/{model}_b{batch}",
                                 split_per_seed=training.flag_value("split_per_seed"), **options)
        groups.append((model, batch, grid, run))
    rows = rank(groups, seeds, varied)
    best = rows[0]
    run = next(g[3] for g in groups if g[3].name == best["run"])
    t = run.trainer
    picked = jax.tree.map(lambda v: v[np.asarray(best["members"])], run.state.best)
    x_test = t.replicate(run.dataset.x_test)
    test = training.test_scores(t, picked, x_test, run.dataset.y_test)
    out = common.run_dir(options.get("results_dir", "results"), run_name)
    result = {"run": run_name, "varied": varied, "seeds": seeds, "rows": rows,
              "best": {"label": best["label"], "config": {k: best[k] for k in ("model", "batch", *train.HPARAM_NAMES)},
                       "test": test["plain"], "test_tta": test["tta"]},
              "environment": common.environment()}
    common.write_json(out / "sweep.json", result)
    table = format_table(rows, varied)
    (out / "sweep.txt").write_text(table + "\n")
    report.plot_sweep(rows, out / "sweep.png", title=f"{run_name}: {seeds} seed{'s' * (seeds > 1)} per configuration")
    print(table)
    print(f"best: {best['label']} (val {best['val_mean']:.4f} ± {best['val_std']:.4f}) -> test "
          f"{test['plain']['mean_accuracy']:.4f} ± {test['plain']['std_accuracy']:.4f}, ensemble "
          f"{test['plain']['ensemble_accuracy']:.4f}. Results in {out}")
    return result


def main(argv):
    del argv
    try:
        training.setup(FLAGS.distributed, FLAGS.keep_freed_memory)
        with layers.conv_impl(FLAGS.conv_impl):
            sweep(FLAGS.run_name or "sweep", dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
                  checkpoint_dir=FLAGS.checkpoint_dir, results_dir=FLAGS.results_dir,
                  overwrite=FLAGS.overwrite)
    except (common.UsageError, data.DataError, checkpoint.CheckpointError, train.TrainingError) as e:
        common.fail(str(e))


if __name__ == "__main__":
    app.run(main)
