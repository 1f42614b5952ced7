"""What a person watching a long run sees: a live bar on a terminal, a line every ~10% otherwise.

    bar = TrainingProgress(epochs=100, images_per_step=250)
    train.train_and_evaluate(cfg, paths, progress=bar)      # called as bar(epoch, steps done, steps)

On a terminal one line is redrawn between jitted calls: steps done, images a second, the epoch's
and the run's time left. Elsewhere (a log file, a notebook's captured output) a line is written
each time another tenth of an epoch is done. The first call of the process is the compilation
phase: it says so, then how long compiling and the first steps took. Updates happen on the host
between jitted segments, so they cost the training nothing measurable.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainingProgress:
    """progress(epoch, done, total) for `train.train_and_evaluate` (see the module docstring)."""

    def __init__(self, epochs: int, images_per_step: int, stream: TextIO | None = None,
                 terminal: bool | None = None, clock: Callable[[], float] = time.perf_counter):
        self.epochs, self.images_per_step = epochs, images_per_step
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.clock = clock
        self.compiled = False
        self.epoch = None
        self.rate = None                       # steady steps a second, after compilation

    def _write(self, text: str) -> None:
        if self.terminal:
            self.stream.write("\r" + text.ljust(100)[:100])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, epoch: int, done: int, total: int) -> None:
        now = self.clock()
        if epoch != self.epoch:                     # the epoch starts (done: steps restored, if any)
            self.epoch, self.started, self.start_step, self.last_step, self.last_time = epoch, now, done, done, now
            self.next_line = done + max(1, total // 10)
            if not self.compiled:
                self._write(f"epoch {epoch}/{self.epochs}: compiling the train step ...")
            return
        if not self.compiled:
            self.compiled = True
            message = f"compiled the train step and ran {done - self.start_step} steps in {_clock(now - self.started)}"
            self.stream.write(("\r" + message.ljust(100) + "\n") if self.terminal else message + "\n")
        elif now > self.last_time:
            rate = (done - self.last_step) / (now - self.last_time)
            self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        self.last_step, self.last_time = done, now
        if self.rate is None:
            return
        left = (total - done) / self.rate
        run_left = left + (self.epochs - epoch) * total / self.rate
        text = (f"epoch {epoch}/{self.epochs} [{'#' * int(20 * done / total):<20}] {done}/{total} steps  "
                f"{self.rate * self.images_per_step:,.0f} img/s  epoch ETA {_clock(left)}  run ETA {_clock(run_left)}")
        if self.terminal:
            self._write(text)
            if done >= total:
                self.stream.write("\r" + " " * 100 + "\r")
        elif done >= self.next_line or done >= total:
            self.next_line = done + max(1, total // 10)
            self._write(text)
