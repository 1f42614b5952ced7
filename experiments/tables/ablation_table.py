"""The ablation table (in RESULTS.md): what each piece of a recipe contributes, from committed records.

An ablation record (`records.record_runs(..., ablation_of="speedrun")`) is a run of a recipe with
one thing changed. Its row is set against the run of the base record trained with the same seed:
the change is read off the two configurations (so the table cannot misname it), and the columns
are validation and test accuracy, test accuracy with the run's TTA, the differences from the base
run, minutes and images/s. The base run heads the table. With one seed per row a difference
smaller than the seeds' spread (the base record's std) is not a finding; the table prints that
spread under it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from experiments.tables import results_table
from fmnist_jax.config import TrainConfig, as_record, from_record
from fmnist_jax.errors import RunError

# Fields that say which member or run this is, not how it was trained.
_IDENTITY_FIELDS = ("seed", "seeds", "members")


def config_change(base: dict, changed: dict) -> str:
    """The fields in which configuration `changed` differs from `base`, as "name: old → new".

    A field that one of them lacks (a config.json written before the field existed) counts as
    holding TrainConfig's default, which is what such a run trained with.
    """
    base, changed = _with_defaults(base), _with_defaults(changed)
    parts = []
    for key in sorted(set(base) | set(changed)):
        if key in _IDENTITY_FIELDS:
            continue
        old, new = base.get(key), changed.get(key)
        if old != new:
            parts.append(f"{key}: {_show(old)} → {_show(new)}")
    return "; ".join(parts) or "nothing"


def _with_defaults(config: dict) -> dict:
    """The config with every field, a former zoo name (models.FORMER_NAMES) as what it stood for."""
    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                for f in dataclasses.fields(TrainConfig)}
    full = {**defaults, **config}
    try:
        return as_record(from_record(full))
    except (ValueError, TypeError):       # a config this version cannot build: compare it as saved
        return full


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return "–" if value is None else str(value)


def _seed(run: dict) -> int:
    return run["config"]["seed"]


def _numbers(run: dict) -> dict:
    summary = run["summary"]
    fresh = results_table.has_wall_clock(summary)
    val = summary.get("best_val_accuracy")
    return {
        # None for a run that kept no validation split (--val_fraction=0 --select=final).
        "val_accuracy": None if val is None or None in val else float(np.mean(val)),
        "test_accuracy": summary["test"]["best"]["mean_accuracy"],
        "tta_accuracy": summary["test"]["best_tta"]["mean_accuracy"],
        "tta_views": summary.get("tta", "flip"),
        "minutes": results_table.minutes(summary, fresh),
        "minutes_are_wall_clock": fresh,
        "images_per_second": summary.get("median_images_per_second"),
    }


def rows(records: Sequence[dict]) -> list[dict]:
    """The ablation rows of `records`, grouped by base record and seed: each base run first, then
    its ablations in name order. RunError when an ablation's base record or same-seed run is missing."""
    by_name = {r["name"]: r for r in records}
    out = []
    ablations = sorted((r for r in records if r.get("ablation_of")),
                       key=lambda r: (r["ablation_of"], _seed(r["runs"][0]), r["name"]))
    for record in ablations:
        base_record = by_name.get(record["ablation_of"])
        if base_record is None:
            raise RunError(f"record {record['name']!r} is an ablation of {record['ablation_of']!r}, "
                           "which is not recorded; record the base runs first.")
        run = record["runs"][0]
        base_runs = [b for b in base_record["runs"] if _seed(b) == _seed(run)]
        if not base_runs:
            raise RunError(f"record {record['name']!r} (seed {_seed(run)}) has no run of the same seed "
                           f"in {base_record['name']!r} to compare with.")
        base = _numbers(base_runs[0])
        if not out or out[-1]["base"] != base_record["name"] or out[-1]["seed"] != _seed(run):
            seeds_std = (float(np.std([_numbers(b)["test_accuracy"] for b in base_record["runs"]], ddof=1))
                         if len(base_record["runs"]) > 1 else None)
            out.append({"name": base_record["name"], "base": base_record["name"], "seed": _seed(run),
                        "is_base": True, "change": "none (the recipe)", "seeds": len(base_record["runs"]),
                        "test_std_over_seeds": seeds_std, "notes": "", **base, "val_delta": 0.0, "test_delta": 0.0,
                        "tta_delta": 0.0})
        mine = _numbers(run)
        out.append({"name": record["name"], "base": base_record["name"], "seed": _seed(run), "is_base": False,
                    "change": config_change(base_runs[0]["config"], run["config"]), **mine,
                    "notes": record.get("notes", ""),
                    "val_delta": (None if None in (mine["val_accuracy"], base["val_accuracy"])
                                  else mine["val_accuracy"] - base["val_accuracy"]),
                    "test_delta": mine["test_accuracy"] - base["test_accuracy"],
                    "tta_delta": mine["tta_accuracy"] - base["tta_accuracy"]})
    return out


def markdown(ablation_rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (accuracies in %, differences in points from the base run)."""
    if not ablation_rows:
        return "No ablations are recorded yet (`python -m experiments.results --ablation_of=...`).\n"
    lines = ["| run | change from the recipe | validation | Δ | test | Δ | with TTA | Δ | minutes | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    spreads, notes = [], []
    for r in ablation_rows:
        is_base = r["is_base"]
        delta = (lambda d: "–") if is_base else (lambda d: "–" if d is None else f"{100 * d:+.2f}")
        val = "–" if r["val_accuracy"] is None else f"{100 * r['val_accuracy']:.2f}"
        name = f"**{r['name']}** (seed {r['seed']})" if is_base else r["name"]
        if r["notes"]:
            notes.append(r["notes"])
            name += f" [a{len(notes)}]"
        minutes = f"{r['minutes']:.1f}" + ("" if r["minutes_are_wall_clock"] else " (training only)")
        ips = "–" if r["images_per_second"] is None else f"{r['images_per_second']:,.0f}"
        lines.append(f"| {name} | {r['change']} | {val} | {delta(r['val_delta'])} | "
                     f"{100 * r['test_accuracy']:.2f} | {delta(r['test_delta'])} | "
                     f"{100 * r['tta_accuracy']:.2f} ({r['tta_views']}) | {delta(r['tta_delta'])} | "
                     f"{minutes} | {ips} |")
        if is_base and r["test_std_over_seeds"] is not None:
            spreads.append(f"{r['name']}: the test accuracy of its {r['seeds']} seeds has a std of "
                           f"{100 * r['test_std_over_seeds']:.2f} points; one-seed differences smaller "
                           "than about twice that are noise.")
    lines += [""] + spreads + [""] + [f"[a{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"
