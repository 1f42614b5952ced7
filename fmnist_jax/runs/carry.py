"""An unfinished run packed into one small folder that can be committed, and unpacked again: how a
member of a long campaign outlives the machine it started on.

    carry.pack(RunPaths("seed003_s0", ...), Path("records/in_flight"))     # after it stopped
    carry.unpack(Path("records/in_flight"), RunPaths("seed003_s0", ...))   # on the next machine

A pack holds what a resume needs and nothing more: the run's config.json and metrics.jsonl, and
its latest finished epoch's checkpoint (the whole run state: every member's training state and
best-so-far variables). An interrupted epoch's partial state is left out (it would double the
size for minutes of work): the run repeats that epoch from its start, exactly as it first ran it,
so on the same machine the resumed run is bit-identical to an uninterrupted one (across machines
XLA may compile differently: docs/training.md).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fmnist_jax.runs import lock
from fmnist_jax.runs.checkpoint import RunCheckpoints
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.runs.run_dir import METRICS_FILE

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"              # <pack>/checkpoint/<epoch>/: the Orbax step folder
RESULT_FILES = ("config.json", METRICS_FILE)


def packed_epoch(pack: Path) -> int | None:
    """The epoch whose checkpoint `pack` holds, or None when it holds none."""
    epochs = [int(p.name) for p in (pack / CHECKPOINT).glob("*") if p.name.isdigit()]
    return max(epochs) if epochs else None


def local_epoch(paths: RunPaths) -> int | None:
    """The latest finished epoch checkpointed in the run's own folder, or None."""
    if not paths.checkpoints.exists():
        return None
    checkpoints = RunCheckpoints(paths.checkpoints)
    try:
        return checkpoints.latest_epoch()
    finally:
        checkpoints.close()


def folder_bytes(folder: Path) -> int:
    """Total size of the files under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _recover(target: Path) -> None:
    """Undoes a swap that a crash interrupted: the old pack comes back if the new one never landed."""
    old = target.with_name(target.name + ".old")
    if old.exists() and not target.exists():
        old.rename(target)


def pack(paths: RunPaths, carry_dir: Path) -> Path | None:
    """Packs the run's latest finished epoch into carry_dir/<run>/ (replacing an older pack, never
    a newer one); returns the pack, or None when the run has no finished epoch to carry."""
    epoch = local_epoch(paths)
    target = Path(carry_dir) / paths.name
    _recover(target)
    if epoch is None:
        return None
    if target.exists() and (packed_epoch(target) or 0) >= epoch:
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / CHECKPOINT).mkdir(parents=True)
    shutil.copytree(paths.checkpoints / str(epoch), staging / CHECKPOINT / str(epoch))
    for name in RESULT_FILES:
        if (paths.results / name).exists():
            shutil.copyfile(paths.results / name, staging / name)
    # Swapped in whole: a pack is never half old, half new.
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    log.info("packed %s at epoch %d in %s (%.1f MB)", paths.name, epoch, target, folder_bytes(target) / 1e6)
    return target


def unpack(carry_dir: Path, paths: RunPaths) -> int | None:
    """Puts carry_dir/<run>/ back into the run's folders when it is further along than they are
    (a run's own newer checkpoints are never replaced); returns the epoch unpacked, or None.
    It holds the run's lock meanwhile: a run that another process is training is not written
    under it (RunError, nothing touched)."""
    source = Path(carry_dir) / paths.name
    _recover(source)
    epoch = packed_epoch(source) if source.exists() else None
    if epoch is None:
        return None
    with lock.hold(paths.checkpoints, paths.name):
        if (local_epoch(paths) or 0) >= epoch:
            return None
        paths.make_results()
        destination = paths.checkpoints / str(epoch)
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(source / CHECKPOINT / str(epoch), destination)
        for name in RESULT_FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, paths.results / name)
    log.info("unpacked %s at epoch %d from %s", paths.name, epoch, source)
    return epoch


def discard(carry_dir: Path, name: str) -> None:
    """Removes the pack of run `name` (once the run has finished, its pack is dead weight)."""
    shutil.rmtree(Path(carry_dir) / name, ignore_errors=True)
