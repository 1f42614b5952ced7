"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (a cluster or Colab preemption).

Within `StopRequests()`, the first signal only records the request: training finishes the jitted
call in progress, saves a checkpoint at that step boundary and stops. A second signal exits at
once (status 128 + signal): checkpoints are published by an atomic rename, so what is on disk
stays restorable, and a half-written temporary folder is cleaned up by the next run.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """A context manager whose instance, called, says whether a stop was requested."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        log.warning("%s received: finishing the current step and saving a checkpoint (again to quit "
                    "at once).", signal.Signals(signum).name)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():   # handlers live in the main thread
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
