"""runs.pause_clock: a process stopped with SIGSTOP has the stopped time left out of its seconds."""

import os
import signal
import subprocess
import sys
import time

import pytest

from fmnist_jax.config import TrainConfig
from fmnist_jax.runs import pause_clock
from fmnist_jax.training import loop
from fmnist_jax.training import members as members_lib
from tests.conftest import make_dataset, placed

# The child measures 3.2 s of wall time (time.sleep keeps to the wall clock, stopped or not) with
# both clocks; the parent stops it for 2 s in the middle, so 1.2 s of it the child was running.
CHILD = """
import sys, time
from fmnist_jax.runs.pause_clock import PauseClock
clock = PauseClock(tick=0.05, gap=0.5)
t_wall, t_clock = time.monotonic(), clock.now()
print("ready", flush=True)
time.sleep(3.0)
time.sleep(0.2)   # the heartbeat's next wake-up after the pause has been seen
print(f"{time.monotonic() - t_wall:.3f} {clock.now() - t_clock:.3f} {clock.stopped_seconds:.3f}", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")
def test_a_stopped_process_leaves_the_pause_out():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(2.0)
    os.kill(child.pid, signal.SIGCONT)
    out, _ = child.communicate(timeout=30)
    wall, paused_clock, stopped = map(float, out.split())
    assert 3.1 < wall < 4.0                                # the sleeps, the stop inside them
    assert 1.8 < stopped < 2.3                             # the stop, to about one tick
    assert abs(paused_clock - (wall - stopped)) < 0.05
    assert 0.9 < paused_clock < 1.7                        # the time the child was running


def test_a_busy_or_idle_process_counts_no_pause():
    clock = pause_clock.PauseClock(tick=0.02, gap=0.5)
    t0 = clock.now()
    time.sleep(0.3)
    assert clock.stopped_seconds == 0.0 and 0.29 < clock.now() - t0 < 0.6
    clock.close()


def test_tick_must_be_below_gap():
    with pytest.raises(ValueError, match="tick < gap"):
        pause_clock.PauseClock(tick=1.0, gap=1.0)


def test_a_thread_starved_of_the_gil_while_the_process_works_is_not_a_pause():
    clock = pause_clock.PauseClock(tick=0.02, gap=0.3)
    t0 = clock.now()
    # Pure-Python busy work switches the GIL every few ms, so starve the heartbeat explicitly:
    # a long switch interval keeps this thread on the GIL for the whole loop.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
    finally:
        sys.setswitchinterval(interval)
    time.sleep(0.1)
    assert clock.stopped_seconds == 0.0 and clock.now() - t0 > 1.0
    clock.close()


def test_the_epoch_loop_times_its_epochs_with_the_given_clock():
    # A clock that advances 100 s a call: each epoch is two calls apart, so 100 s whatever ran.
    ds = make_dataset(n_train=64, n_test=16)
    cfg = TrainConfig(model="mlp", epochs=2, batch=32, augment=(), seed=0, split="random", val_fraction=0.25)
    train_idx, val_idx = members_lib.member_splits(ds.y_train, cfg, [0])
    t = placed(cfg, ds.x_train, ds.y_train, train_idx, val_idx)
    ticks = iter(range(0, 10_000, 100))
    results = [r for r, _ in loop.epochs(*t, loop.init(*t), clock=lambda: float(next(ticks)))]
    assert [r.seconds for r in results] == [100.0, 100.0]
    assert results[0].images_per_second == pytest.approx(t.setup.steps_per_epoch * cfg.batch / 100.0)
