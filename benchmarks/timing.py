"""Timing shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `run` over `repeats` calls, after one warm-up call (compilation, allocator).

    `run` must block until its work is done (e.g. jax.block_until_ready).
    """
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_seconds(runs: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """{name: median wall time}: one warm-up call of each run, then `repeats` rounds in which every
    run is timed once after the other (ours, the peer, ours, the peer ...), so a change in the
    machine's speed during the benchmark reaches every run alike. Each run must block until done.
    """
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
