"""Reproduce the results table (RESULTS.md, and the README's copy): train every member of the presets' protocols (resuming any
that stopped), record each preset whose members have all finished, and rebuild the table.

  python -m experiments.reproduce                               # every preset of the table, cheapest first
  python -m experiments.reproduce --presets=seed003             # one protocol (its 5 members)
  python -m experiments.reproduce --presets=speedrun --dry_run  # print the commands, run nothing
  python -m experiments.reproduce --presets=speedrun -- --conv_impl=xla   # flags after -- go to every run

Each member is its own run, `<preset>_s<seed>` for seeds 0..N-1 (N: the preset's MEMBERS), trained
by `python -m experiments.cnn --preset=P --seed=S --seeds=1 --run_name=P_sS` in a process of its
own, so its minutes are those of that command alone (no compilation shared with the member
before it). A finished member's summary, config and test probabilities are copied at once to
records/members/<run>/ (commit them: a campaign spans machines whose results/ are gone the next
day); a member finished there or in results/ is skipped; one that stopped resumes from its
checkpoint (bit-identical to an uninterrupted run), so rerunning this command after any
interruption continues the reproduction.

A member longer than a working stretch on one machine travels in records/in_flight/<run>/
(`fmnist_jax.runs.carry`: its config, metrics and latest epoch's checkpoint, about 8 MB for seed
003): when the command is stopped (SIGTERM or Ctrl-C, which it passes to the member, which saves
and exits), the member is packed there; commit it, and on the next machine this command unpacks
it and resumes. A finished member's pack is removed. The full table takes days on two CPU cores (seed 002:
100 epochs of 153,000 images with a 3.4M-parameter net); on one GPU, hours.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from absl import flags

from experiments import cli, results
from experiments.tables import records
from fmnist_jax import config, presets
from fmnist_jax.errors import ConfigError, RunError, RunInterrupted
from fmnist_jax.runs import carry
from fmnist_jax.runs.files import PROBABILITIES_FILE, RunPaths

# Extra flags after `--` are handed to every experiments.cnn run.
TAKES_ARGS = True


def define_flags(fv) -> None:
    flags.DEFINE_list("presets", list(presets.TABLE), "Presets to reproduce, in this order.", flag_values=fv)
    flags.DEFINE_integer("members", 0, "Members (seeds 0..N-1) of each preset (0: the preset's protocol).",
                         flag_values=fv)
    flags.DEFINE_bool("dry_run", False, "Print each member's command and whether it is done; train nothing.",
                      flag_values=fv)
    flags.DEFINE_bool("record", True, "Record each preset whose members have all finished "
                      "(records/<preset>.json) and rebuild RESULTS.md and the README's table.", flag_values=fv)
    flags.DEFINE_string("records_dir", str(records.RECORDS_DIR), "Where the records are.", flag_values=fv)
    flags.DEFINE_string("readme", "README.md", "The README whose table is rebuilt.", flag_values=fv)
    flags.DEFINE_string("results_page", "RESULTS.md", "The results page that is rebuilt.", flag_values=fv)
    flags.DEFINE_bool("carry", True, "Unpack unfinished members from <records_dir>/in_flight/ before "
                      "resuming them, and pack a stopped member there (commit it to resume elsewhere).",
                      flag_values=fv)
    cli.define_run_flags(fv, name=False, overwrite=False)


def member_runs(preset: str, members: int) -> list[str]:
    """The run names of the preset's members: <preset>_s0 ... <preset>_s<members-1>."""
    return [f"{preset}_s{seed}" for seed in range(members)]


def member_command(preset: str, seed: int, run: str, fv, extra) -> list[str]:
    """The argv that trains one member (run name `run`) as its own process."""
    argv = [sys.executable, "-m", "experiments.cnn", f"--preset={preset}", f"--seed={seed}", "--seeds=1",
            f"--run_name={run}", f"--results_dir={fv.results_dir}",
            f"--checkpoint_dir={fv.checkpoint_dir}"]
    if fv.data_dir:
        argv.append(f"--data_dir={fv.data_dir}")
    return argv + list(extra)




# A finished member's files that its preset's record needs, kept under records/members/<run>/
# (committed): the results/ and checkpoints/ of a machine do not outlive it, and a protocol's
# members may finish on different days and machines.
ARCHIVED = ("summary.json", "config.json", PROBABILITIES_FILE)


def archive_member(paths: RunPaths, members_dir: Path) -> RunPaths:
    """Copies a finished member's summary, config and test probabilities to members_dir/<run>/;
    returns the RunPaths of the copy (a results folder the records can be made from)."""
    archived = RunPaths(paths.name, members_dir)
    archived.make_results()
    for name in ARCHIVED:
        if (paths.results / name).exists():
            shutil.copyfile(paths.results / name, archived.results / name)
    return archived


def finished_copy(paths: RunPaths, members_dir: Path) -> RunPaths | None:
    """Where a member's finished results are: its results folder, else its archived copy, else None."""
    for candidate in (paths, RunPaths(paths.name, members_dir)):
        if (candidate.results / "summary.json").exists():
            return candidate
    return None


def stale_fields(copy: RunPaths, preset: str, seed: int) -> list[str]:
    """The fields in which a finished member's config.json differs from what its preset trains
    today (a preset changed after the member ran); how it executed (config.EXECUTION_FIELDS) does
    not count. A config.json without a field counts as that field's default."""
    saved = config.as_record(config.from_record(json.loads((copy.results / "config.json").read_text())))
    expected = config.as_record(dataclasses.replace(presets.get(preset), seed=seed, seeds=1))
    return sorted(k for k in expected if saved.get(k) != expected[k] and k not in config.EXECUTION_FIELDS)


def run_member(command: list[str]) -> tuple[int, int | None]:
    """Runs one member's process to its end; SIGTERM / SIGINT received meanwhile are passed on to
    it (it saves a checkpoint at the next step boundary and exits) instead of killing this
    process first. Returns (exit status, the signal received or None).

    The member runs in its own session, so a Ctrl-C in the terminal reaches it once (forwarded
    from here), not twice (a second SIGINT makes a run quit without saving)."""
    received, process = [], []

    def forward(signum, frame):
        received.append(signum)
        if process:
            process[0].send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        process.append(subprocess.Popen(command, start_new_session=True))
        if received:                          # a signal that came while the member was starting
            process[0].send_signal(received[0])
        status = process[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status, (received[0] if received else None)


def _minutes(paths: RunPaths) -> float | None:
    summary = json.loads((paths.results / "summary.json").read_text())
    seconds = summary.get("wall_seconds") or summary.get("train_seconds")
    return None if seconds is None else seconds / 60


def campaign_status(plan: dict[str, list[RunPaths]], current: RunPaths, members_dir: Path | None = None) -> str:
    """Where the campaign stands as `current` starts: members done, and the time left estimated
    from each preset's finished members (presets without one are counted as unknown)."""
    def copy(p):
        return finished_copy(p, members_dir) if members_dir is not None else (
            p if (p.results / "summary.json").exists() else None)
    runs = [p for preset_runs in plan.values() for p in preset_runs]
    finished = [p for p in runs if copy(p)]
    left, unknown = 0.0, []
    for preset, preset_runs in plan.items():
        measured = [m for m in (_minutes(copy(p)) for p in preset_runs if copy(p)) if m is not None]
        todo = sum(not copy(p) for p in preset_runs)
        if todo and measured:
            left += todo * sum(measured) / len(measured)
        elif todo:
            unknown.append(preset)
    estimate = f"about {left / 60:.1f} h left at the measured speed" if left else "no member measured yet"
    return (f"campaign: {current.name} is member {runs.index(current) + 1} of {len(runs)}, {len(finished)} "
            f"finished; {estimate}" + (f" (not counting {', '.join(unknown)})" if unknown and left else ""))


def main(fv, args) -> dict:
    extra = [a for a in args if a != "--"]
    unknown = [p for p in fv.presets if p not in presets.NAMES]
    if unknown:                                # one sentence, before any training
        raise ConfigError("presets", f"does not know {unknown[0]!r}; choose from {', '.join(presets.NAMES)}.")
    if fv.members < 0:
        raise ConfigError("members", f"must be 0 (the protocol's) or positive, got {fv.members}.")
    done = {}
    plan = {preset: [RunPaths(run, fv.results_dir) for run in member_runs(preset, fv.members or presets.members(preset))]
            for preset in fv.presets}
    members_dir = Path(fv.records_dir) / "members"
    carry_dir = Path(fv.records_dir) / "in_flight"
    for preset, runs in plan.items():
        members = len(runs)
        for seed, paths in enumerate(runs):
            copy = finished_copy(paths, members_dir)
            stale = stale_fields(copy, preset, seed) if copy is not None and not extra else []
            if stale:      # its numbers are not the preset's: never record them under its name
                raise RunError(f"{paths.name} finished with a different {', '.join(stale)} than the {preset} preset "
                               f"trains now; move {copy.results} aside (or rename it) to train it again.")
            if copy is not None:
                print(f"{paths.name}: finished (results in {copy.results})")
                if fv.record and not fv.dry_run and copy is paths:
                    archive_member(paths, members_dir)
                if fv.carry and not fv.dry_run:
                    carry.discard(carry_dir, paths.name)     # a pack left by a machine that stopped it
                continue
            command = member_command(preset, seed, paths.name, fv, extra)
            if not fv.dry_run:
                print(campaign_status(plan, paths, members_dir), flush=True)
            print(f"{paths.name}: {'would run' if fv.dry_run else 'running'}: {shlex.join(command)}", flush=True)
            if fv.dry_run:
                continue
            member_paths = RunPaths(paths.name, fv.results_dir, fv.checkpoint_dir)
            if fv.carry and (epoch := carry.unpack(carry_dir, member_paths)) is not None:
                print(f"{paths.name}: unpacked from {carry_dir / paths.name} at epoch {epoch}", flush=True)
            status, stopped_by = run_member(command)
            if status != 0:
                packed = carry.pack(member_paths, carry_dir) if fv.carry else None
                where = (f"; packed at epoch {carry.packed_epoch(packed)} in {packed} "
                         f"({carry.folder_bytes(packed) / 1e6:.1f} MB): commit it to resume on another machine"
                         if packed else "")
                if stopped_by is not None:
                    raise RunInterrupted(f"{paths.name} stopped on {signal.Signals(stopped_by).name}{where}; "
                                         "rerun this command to resume it.", stopped_by)
                raise RunError(f"{paths.name} stopped with exit status {status}{where}; rerun this command to resume it.")
            if fv.carry:
                carry.discard(carry_dir, paths.name)
            if fv.record:
                archive_member(paths, members_dir)      # committed with the records: it outlives this machine
            if stopped_by is not None:                  # it finished as the stop came: honour the stop
                raise RunInterrupted(f"{paths.name} finished; stopped on {signal.Signals(stopped_by).name} before "
                                     "the next member; rerun this command to go on.", stopped_by)
        copies = [finished_copy(paths, members_dir) for paths in runs]
        done[preset] = all(copies)
        if done[preset] and fv.record and not fv.dry_run:
            records.record_runs(preset, copies, records_dir=fv.records_dir)
            print(f"recorded {preset} ({members} member{'s' if members > 1 else ''}) in "
                  f"{Path(fv.records_dir) / (preset + '.json')}")
    if fv.record and not fv.dry_run and any(done.values()):
        cli.invoke(results, [f"--records_dir={fv.records_dir}", f"--readme={fv.readme}", f"--results_page={fv.results_page}",
                             f"--results_dir={fv.results_dir}"])
    return done


if __name__ == "__main__":
    cli.run_script(sys.modules[__name__])
