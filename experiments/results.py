"""The results: record finished runs, then regenerate RESULTS.md and the README's table from the records.

  python -m experiments.results --record=seed003 --runs=seed003_s0x5     # copy a run's summary into records/
  python -m experiments.results --record=seed003 --runs=a,b,c,d,e        # several runs, one row
  python -m experiments.results                                          # rebuild the table
  python -m experiments.results --check                                  # exit 1 if either is stale
  python -m experiments.results --record=sr_no_ema --runs=sr_no_ema --ablation_of=speedrun   # an ablation

RESULTS.md is generated whole: the results table with its notes, the plot of test accuracy against
minutes (records/accuracy_vs_minutes.png) and the ablation table. The README holds the results
table without its notes, between its results-table markers. records/table.json and
records/ablation_table.json hold the same rows. Records made with --ablation_of go to the
ablation table, each set against the base record's run of the same seed. records/ is tracked:
each record is a finished run's summary.json and config.json (experiments.tables.records).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from experiments import cli
from experiments.tables import ablation_table, records, results_page, results_table
from fmnist_jax.errors import ConfigError
from fmnist_jax.runs.files import RunPaths, write_json, write_text


def define_flags(fv) -> None:
    flags.DEFINE_string("record", None, "Record the runs of --runs as records/<this>.json before "
                        "rebuilding the table.", flag_values=fv)
    flags.DEFINE_list("runs", [], "Finished runs (folders of --results_dir) that make up the record.",
                      flag_values=fv)
    flags.DEFINE_string("notes", None, "A note for the record's row (e.g. why a number is not "
                        "reached); an earlier record's note is kept when not given.", flag_values=fv)
    flags.DEFINE_string("ablation_of", None, "With --record: the record of the recipe that these runs "
                        "change one thing of; the record goes to the ablation table.", flag_values=fv)
    flags.DEFINE_string("records_dir", str(records.RECORDS_DIR), "Where the records are.", flag_values=fv)
    flags.DEFINE_string("readme", "README.md", "The README whose table is rebuilt.", flag_values=fv)
    flags.DEFINE_string("results_page", "RESULTS.md", "The generated page of every table and note.",
                        flag_values=fv)
    flags.DEFINE_bool("check", False, "Only check that the README's table and the results page equal "
                      "what the records give: exit 1 when either is stale; writes nothing.", flag_values=fv)
    cli.define_run_flags(fv, name=False, checkpoints=False, overwrite=False, data=False)


def main(fv, args) -> list[dict]:
    if fv.runs and not fv.record:
        raise ConfigError("record", "is needed with --runs: name the record the runs go into.")
    if fv.ablation_of and not fv.record:
        raise ConfigError("ablation_of", "is only used with --record (and --runs).")
    if fv.record and not fv.runs:
        raise ConfigError("runs", "is empty: name the finished runs that make up the record.")
    if fv.record:
        if fv.check:
            raise ConfigError("check", "only checks; it cannot be combined with --record.")
        records.record_runs(fv.record, [RunPaths(r, fv.results_dir) for r in fv.runs],
                            records_dir=fv.records_dir, notes=fv.notes, ablation_of=fv.ablation_of)
    every_record = records.load_records(fv.records_dir)
    rows = [results_table.row(r) for r in every_record if not r.get("ablation_of")]
    ablations = ablation_table.rows(every_record)
    readme = Path(fv.readme)
    if not readme.exists():
        raise ConfigError("readme", f"{readme} does not exist.")
    text = readme.read_text()
    updated = results_table.replace_table(text, results_table.markdown(rows, notes=False))
    page = Path(fv.results_page)
    page_text = results_page.render(rows, ablations)
    if fv.check:
        stale = [str(p) for p, now, want in ((readme, text, updated), (page, page.read_text() if page.exists()
                                             else None, page_text)) if now != want]
        if stale:
            print(f"{' and '.join(stale)} {'is' if len(stale) == 1 else 'are'} stale; run python -m "
                  "experiments.results", file=sys.stderr)
            sys.exit(1)
        print(f"{readme}'s results table and {page} are up to date ({len(rows)} rows, "
              f"{len(ablations)} ablation rows).")
        return rows
    write_text(readme, updated)
    write_text(page, page_text)
    out = Path(fv.records_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", rows)
    if ablations:
        write_json(out / "ablation_table.json", ablations)
    if rows:
        results_table.plot(rows, out / "accuracy_vs_minutes.png")
    print(f"{len(rows)} rows written to {page}, {readme}'s results table, {out / 'table.json'}"
          + (f" and {out / 'accuracy_vs_minutes.png'}" if rows else "")
          + (f"; {len(ablations)} to the ablation table" if ablations else ""))
    return rows


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
