"""What the live progress costs a training run, two ways: the host time of one update against
a segment of steps, and a real epoch with and without progress (which waits for each segment
before it reports), interleaved, median of repeats.

  python -m benchmarks.progress_overhead
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


def epoch_seconds(with_progress: bool, setup, programs, state) -> float:
    from fmnist_jax.training import loop
    start = time.perf_counter()
    new_state, _, _ = loop.train_epoch(setup, programs, state, 0,
                                       (lambda done, total: None) if with_progress else None)
    import jax
    jax.block_until_ready(new_state)
    return time.perf_counter() - start


def real_epochs(repeats: int = 5) -> tuple[float, float]:
    """(median seconds of an epoch without progress, with it): seed 003's net, 3,200 synthetic
    images in batches of 64 (50 steps in segments of 10)."""
    import numpy as np

    from fmnist_jax.config import TrainConfig
    from fmnist_jax.training import loop
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3300, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 3300).astype(np.int32)
    cfg = TrainConfig(model="seed003", batch=64, augment=("flip",))
    setup = loop.RunSetup.place(cfg, x, y, np.arange(3200), np.arange(3200, 3300))
    programs = setup.programs()
    times = {False: [], True: []}
    for i in range(2 * repeats + 2):            # the first two compile and warm up
        with_progress = bool(i % 2)
        seconds = epoch_seconds(with_progress, setup, programs, loop.init(setup, programs))
        if i >= 2:
            times[with_progress].append(seconds)
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> None:
    # The smallest segment of a real run: the speedrun preset's, about 21 steps of ~0.3 s on 2 cores.
    segment = 21 * 0.3
    for terminal in (True, False):
        seconds = statistics.median(update_seconds(terminal) for _ in range(3))
        print(f"{'terminal' if terminal else 'log lines'}: {seconds * 1e6:.1f} us an update, "
              f"{seconds / segment:.2e} of a {segment:.1f} s segment")
    without, with_progress = real_epochs()
    print(f"an epoch of seed003 (50 steps of 64, segments of 10): {without:.3f} s without progress, "
          f"{with_progress:.3f} s with it: ratio {with_progress / without:.3f}")


if __name__ == "__main__":
    main()
