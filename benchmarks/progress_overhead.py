"""What the live progress costs a training run: the host time of one progress update, against
the time of the jitted segment of steps it follows.

  python -m benchmarks.progress_overhead

Updates happen between segments (a tenth of an epoch at most, `step.segment_length`), on the
host, while the devices are idle anyway; the ratio printed is the run's slow-down.
"""

from __future__ import annotations

import io
import statistics
import time

from experiments.progress import TrainingProgress


def update_seconds(terminal: bool, calls: int = 20_000) -> float:
    bar = TrainingProgress(epochs=10, images_per_step=256, stream=io.StringIO(), terminal=terminal)
    bar(1, 0, calls)
    bar(1, 1, calls)                                    # past the compilation phase
    start = time.perf_counter()
    for done in range(2, calls):
        bar(1, done, calls)
    return (time.perf_counter() - start) / (calls - 2)


def main() -> None:
    # The smallest segment of a real run: the speedrun preset's, about 21 steps of ~0.3 s on 2 cores.
    segment = 21 * 0.3
    for terminal in (True, False):
        seconds = statistics.median(update_seconds(terminal) for _ in range(3))
        print(f"{'terminal' if terminal else 'log lines'}: {seconds * 1e6:.1f} us an update, "
              f"{seconds / segment:.2e} of a {segment:.1f} s segment")


if __name__ == "__main__":
    main()
