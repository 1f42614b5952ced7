"""Hyper-parameter sweeps: a grid x seeds trained as members of one program per shape.

Values that do not change shapes (config.HPARAM_NAMES) form a grid whose points, times
cfg.seeds, become the members of one program: each member carries its hyper-parameters as
arrays in its state. Values that change shapes (model, batch) make one program (and one nested
run, NAME/<model>_b<batch>) per combination. The configurations are ranked by their members'
best validation accuracy; only the best one is scored on the test set.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Mapping, Sequence

import jax
import numpy as np

from fmnist_jax import config
from fmnist_jax.errors import ConfigError
from fmnist_jax.evaluation import report, summary
from fmnist_jax.runs import lock
from fmnist_jax.runs.files import RunPaths, environment, write_json, write_text
from fmnist_jax.training import step
from fmnist_jax.training.members import Member
from fmnist_jax.training.train import TrainedRun, train_run

log = logging.getLogger(__name__)


def grid_points(values: Mapping[str, Sequence[float]]) -> list[dict]:
    """Every combination of the hyper-parameter lists, as {name: value} dicts (first name slowest)."""
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def grid_members(grid: list[dict], first_seed: int, seeds: int) -> list[Member]:
    """Members for grid x seeds: configuration-major, so configuration i holds members i*seeds ... ."""
    return [Member(first_seed + s, point) for point in grid for s in range(seeds)]


def rank(groups: list[tuple[str, int, list[dict], TrainedRun]], seeds: int, varied: list[str]) -> list[dict]:
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
    """The ranking as a fixed-width text table."""
    columns = ["model", "batch"] + varied
    lines = ["  ".join(f"{c:>14}" for c in columns + ["val mean", "val std", "best epochs"])]
    for r in rows:
        cells = [f"{r[c]:>14}" if isinstance(r[c], str) else f"{r[c]:>14g}" for c in columns]
        lines.append("  ".join(cells + [f"{r['val_mean']:>14.4f}", f"{r['val_std']:>14.4f}",
                                        f"{str(r['best_epoch']):>14}"]))
    return "\n".join(lines)


def check_lists(lists: Mapping[str, Sequence]) -> None:
    """ConfigError for an empty list or a value listed twice."""
    for name, values in lists.items():
        if not values:
            raise ConfigError(name, "is empty.")
        if len(set(values)) != len(values):
            raise ConfigError(name, "lists a value twice.")


def sweep(base: config.TrainConfig, paths: RunPaths, *, models: Sequence[str] = (),
          batches: Sequence[int] = (), hparams: Mapping[str, Sequence[float]] | None = None,
          data_dir=None, overwrite: bool = False, stop=None, progress=None) -> dict:
    """Trains every shape group of the grid, ranks the configurations, tests the best once.

    models / batches default to base's; `hparams` maps names of config.HPARAM_NAMES to value
    lists (a name not given keeps base's value). Everything is validated before anything trains.
    The process holds the sweep's lock throughout; `stop` and `progress` are as for `train.train_run`.
    Writes sweep.json, sweep.txt and sweep.png under results/NAME/ and returns the result.
    """
    if base.val_fraction == 0:
        raise ConfigError("val_fraction", "0 leaves no validation split, and a sweep ranks its points on "
                                          "one: hold out a share (the default 0.15).")
    models, batches = list(models) or [base.model], list(batches) or [base.batch]
    lists = {name: list((hparams or {}).get(name, [getattr(base, name)])) for name in config.HPARAM_NAMES}
    check_lists({"model": models, "batch": batches, **lists})
    grid = grid_points(lists)
    varied = [name for name, values in lists.items() if len(values) > 1]
    # A model other than base's starts from its own defaults (base's model_args are for base's
    # model); a former name (models.FORMER_NAMES) brings the arguments it stood for.
    plans = [(m, dataclasses.replace(base, model=m, model_args=base.model_args if m == base.model else {},
                                     batch=b, **grid[0]))
             for m, b in itertools.product(models, batches)]
    for _, cfg in plans:
        cfg.validate()
    for point in grid:
        step.HParams.create(base, **point)
    with lock.hold(paths.checkpoints, paths.name):
        return _train_and_rank(base, paths, plans, grid, varied, data_dir, overwrite, stop, progress)


def _train_and_rank(base, paths, plans, grid, varied, data_dir, overwrite, stop, progress) -> dict:
    groups = []
    for model, cfg in plans:
        members = grid_members(grid, cfg.seed, cfg.seeds)
        log.info("sweep %s: %s batch %d, %d configurations x %d seeds = %d members in one program",
                 paths.name, model, cfg.batch, len(grid), cfg.seeds, len(members))
        run = train_run(cfg, paths.child(f"{model}_b{cfg.batch}"), members, data_dir=data_dir,
                        overwrite=overwrite, stop=stop, progress=progress)
        groups.append((model, cfg.batch, grid, run))
    rows = rank(groups, base.seeds, varied)
    best = rows[0]
    run = next(g[3] for g in groups if g[3].name == best["run"])
    picked = jax.tree.map(lambda v: v[np.asarray(best["members"])], run.state.best)
    test = summary.test_scores(run.programs.predict, picked, run.setup.replicate(run.dataset.x_test),
                               run.dataset.y_test, base.tta)
    out = paths.make_results()
    result = {"run": paths.name, "varied": varied, "seeds": base.seeds, "rows": rows,
              "best": {"label": best["label"],
                       "config": {k: best[k] for k in ("model", "batch", *config.HPARAM_NAMES)},
                       "val_mean": best["val_mean"], "val_std": best["val_std"],
                       "test": test["plain"], "test_tta": test["tta"]},
              "environment": environment()}
    write_json(out / "sweep.json", result)
    write_text(out / "sweep.txt", format_table(rows, varied) + "\n")
    report.plot_sweep(rows, out / "sweep.png",
                      title=f"{paths.name}: {base.seeds} seed{'s' * (base.seeds > 1)} per configuration")
    return result
