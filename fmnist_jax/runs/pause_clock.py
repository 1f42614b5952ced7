"""A wall clock that leaves out the time the process was stopped (SIGSTOP, a suspended laptop).

A long run paused with ``kill -STOP`` (to time something else on the same cores) and continued
hours later would otherwise log those hours as one epoch's training time: its images a second,
its training minutes and the campaign's estimates would all be wrong. A stopped process runs no
thread, so a heartbeat thread that wakes every `tick` seconds sees a pause as one long gap
between two wake-ups; a gap longer than `gap` in which the process used (almost) no CPU time is
counted as stopped time, less the tick itself.

    with pause_clock.PauseClock() as clock:     # a heartbeat thread while the block runs
        t0 = clock.now()
        ...
        seconds = clock.now() - t0              # wall seconds, stops left out (to about one tick)

A gap can also come from a long call holding the GIL, or an overloaded machine starving the
thread; then the process (or its other threads) kept using CPU time, so it does not count. The
cost is one wake-up per `tick` (1 s by default).
"""

from __future__ import annotations

import threading
import time


class PauseClock:
    """Monotonic seconds with the process's stopped intervals subtracted (see the module docstring)."""

    def __init__(self, tick: float = 1.0, gap: float = 5.0):
        if not 0 < tick < gap:
            raise ValueError(f"need 0 < tick < gap, got tick={tick}, gap={gap}.")
        self.tick, self.gap = tick, gap
        self._stopped = 0.0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="pause-clock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        last, last_cpu = time.monotonic(), time.process_time()
        while not self._halt.wait(self.tick):
            now, cpu = time.monotonic(), time.process_time()
            # A stopped process uses no CPU; a thread starved of the GIL by a long call in
            # another thread sees the same gap while the process works: that is not a pause.
            if now - last > self.gap and cpu - last_cpu < 0.1 * (now - last):
                with self._lock:
                    self._stopped += now - last - self.tick
            last, last_cpu = now, cpu

    @property
    def stopped_seconds(self) -> float:
        """Seconds the process has been stopped since the clock started (to about one tick)."""
        with self._lock:
            return self._stopped

    def now(self) -> float:
        """Monotonic seconds less the stopped time; differences of two calls are what counts."""
        return time.monotonic() - self.stopped_seconds

    def close(self) -> None:
        """Stops the heartbeat; now() and stopped_seconds stay readable (no further pauses counted)."""
        self._halt.set()
        self._thread.join()

    def __enter__(self) -> "PauseClock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

