"""Records: the small, committed copies of finished runs that the README's results table is built from.

`results/` and `checkpoints/` are not tracked (they hold megabytes of weights and plots), so a
finished run is *recorded*: its summary.json and config.json are copied into one JSON file,
``records/<name>.json``, which is committed. A record holds one run or several (members of one
protocol trained as separate runs, e.g. seed 003's five nets on a machine that trains one at a
time); the table pools their members. Anyone can regenerate the table from the records
(`experiments.results`) and check a row against the run it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from fmnist_jax.errors import RunError
from fmnist_jax.evaluation import ensemble
from fmnist_jax.runs.files import PROBABILITIES_FILE, RunPaths, check_run_name, write_json

RECORDS_DIR = Path("records")
# Files experiments.results writes next to the records (they are not records).
GENERATED_FILES = ("table.json", "ablation_table.json")


def record_runs(name: str, runs: Sequence[RunPaths], *, records_dir=RECORDS_DIR, notes: str | None = None,
                ablation_of: str | None = None) -> dict:
    """Writes records/<name>.json from finished runs (each must have its summary.json).

    `notes` (e.g. why a number is not reached) is kept from an earlier record of the same name
    when not given. `ablation_of` names the record of the recipe these runs change one thing of:
    the record then goes to the ablation table (`fmnist_jax.ablation_table`) instead of the
    results table. Returns the record.
    """
    check_run_name(name, "record")
    if not runs:
        raise RunError("name at least one run to record.")
    entries = []
    for paths in runs:
        summary_path, config_path = paths.results / "summary.json", paths.results / "config.json"
        if not summary_path.exists():
            raise RunError(f"run {paths.name!r} has no summary ({summary_path}): it has not finished; "
                           "rerun its command to finish it.")
        entries.append({"summary": _read(summary_path), "config": _read(config_path)})
    path = Path(records_dir) / f"{name}.json"
    if notes is None and path.exists():
        notes = _read(path).get("notes", "")
    if ablation_of is not None:
        check_run_name(ablation_of, "ablation base record")
    record = {"name": name, "runs": entries, "notes": notes or "", "ensemble": runs_ensemble(runs)}
    if ablation_of:
        record["ablation_of"] = ablation_of
    Path(records_dir).mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def runs_ensemble(runs: Sequence[RunPaths]) -> dict | None:
    """The soft vote of every member of `runs` on the test set, plain and with each run's TTA, from
    the probabilities their summaries saved (`PROBABILITIES_FILE`): the ensemble of
    members trained as separate runs. None when a run has no such file (runs older than it) or
    the runs were tested on different images."""
    plain, tta, labels = [], [], None
    for paths in runs:
        file = paths.results / PROBABILITIES_FILE
        if not file.exists():
            return None
        try:
            with np.load(file) as saved:
                run_labels, run_plain, run_tta = saved["labels"], saved["best_plain"], saved["best_tta"]
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"cannot read {file} ({e}); rerun the run's command with --overwrite.") from e
        if labels is not None and not np.array_equal(labels, run_labels):
            return None
        labels = run_labels
        plain.append(run_plain)
        tta.append(run_tta)
    plain, tta = np.concatenate(plain), np.concatenate(tta)

    def accuracy(probs):      # in float64, as the summary's own vote
        return float((ensemble.vote(probs.astype(np.float64)) == labels).mean())

    return {"members": len(plain), "best": accuracy(plain), "best_tta": accuracy(tta)}


def load_records(records_dir=RECORDS_DIR) -> list[dict]:
    """Every record in `records_dir`, sorted by name ([] when there are none)."""
    directory = Path(records_dir)
    if not directory.is_dir():
        return []
    return [_read(p) for p in sorted(directory.glob("*.json")) if p.name not in GENERATED_FILES]


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path} ({e}); rerun the run or restore the file from git.") from e
