"""The progress a person watches: the compilation phase, a line every tenth of an epoch off a
terminal, images a second and time left from the steady rate."""

import io

from experiments.progress import TrainingProgress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _run(terminal, epochs=2, total=20, step_seconds=0.5, compile_seconds=30.0):
    stream, clock = io.StringIO(), FakeClock()
    bar = TrainingProgress(epochs, images_per_step=100, stream=stream, terminal=terminal, clock=clock)
    for epoch in range(1, epochs + 1):
        bar(epoch, 0, total)
        for done in range(2, total + 1, 2):            # segments of 2 steps
            clock.now += 2 * step_seconds + (compile_seconds if epoch == 1 and done == 2 else 0.0)
            bar(epoch, done, total)
    return stream.getvalue()


def test_off_a_terminal_a_line_every_tenth_with_rate_and_time_left():
    lines = _run(terminal=False).splitlines()
    assert lines[0] == "epoch 1/2: compiling the train step ..."
    assert lines[1] == "compiled the train step and ran 2 steps in 0:31"
    progress = [line for line in lines if line.startswith("epoch 2/2")]
    assert len(progress) == 10                          # every 2 of 20 steps is a tenth
    # Steady 2 steps a second of 100 images; halfway through the last epoch 5 s are left.
    halfway = progress[4]
    assert "10/20 steps" in halfway and "200 img/s" in halfway and "epoch ETA 0:05  run ETA 0:05" in halfway
    assert "run ETA 0:15" in [line for line in lines if line.startswith("epoch 1/2 ") and "10/20" in line][0]


def test_on_a_terminal_one_line_is_redrawn():
    out = _run(terminal=True)
    assert out.count("\n") == 1                          # only the compilation line ends with a newline
    assert "\r" in out and "img/s" in out and out.endswith("\r")
