"""One writer per run: an OS lock on checkpoints/<run>/run.lock for as long as a process trains it.

The lock is `fcntl.flock`, so the kernel releases it when its holder dies, however it dies: a
crashed or killed run never blocks the next one. A second process that wants the run stops at
once with a RunError naming the holder (the lock file holds its PID, host and start time).
A process takes a run's lock once (`run_dir.RunDir.open`); a second `hold` of the same run, in
this process or another, is refused.
Readers (evaluation, analysis) take no lock: Orbax publishes a checkpoint by renaming a
finished temporary folder, so a reader never sees one half written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from fmnist_jax.errors import RunError

LOCK_NAME = "run.lock"


@contextlib.contextmanager
def hold(run_checkpoints: Path, run_name: str) -> Iterator[None]:
    """Holds the run's lock for the block; RunError if another process holds it."""
    path = (Path(run_checkpoints) / LOCK_NAME).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunError(f"cannot create the lock file {path} ({e.strerror}).") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise RunError(f"run {run_name!r} is being trained by {holder}; wait for it to finish, or "
                           "pick another run_name.") from None
        raise RunError(f"cannot lock {path} ({e.strerror}).") from e
    os.ftruncate(fd, 0)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} (since {started})\n".encode(), 0)
    try:
        yield
    finally:
        os.close(fd)    # closing the descriptor releases the lock; the file stays (no unlink race)
