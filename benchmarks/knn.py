"""k-NN speed, side by side: fmnist_jax vs scikit-learn (brute) vs faiss (IndexFlatL2).

  python -m benchmarks.knn                       # full 60k x 10k, k=5, L1 and L2
  python -m benchmarks.knn --test_limit=1000     # quicker

Every peer runs on the same data in this process, in --repeats interleaved rounds (medians); the table prints seconds, accuracy and each
peer's time divided by fmnist_jax's (ratio > 1: fmnist_jax is faster). fmnist_jax is timed after
one warm-up call on a small slice, so compilation is not counted.

The roofline columns count the distance work every implementation must do: L2 as the matmul of
the squared-distance expansion (2 FLOPs a multiply-add, 2 N_test N_train D), L1 as a subtraction,
an absolute value and an addition per pixel pair (3 N_test N_train D, with no fused multiply-add
to use: the matmul peak is a ceiling it cannot reach), against this machine's float32 matmul peak.
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags

from benchmarks import roofline
from fmnist_jax.data import datasets
from fmnist_jax.knn import exact

FLAGS = flags.FLAGS
flags.DEFINE_integer("k", 5, "Neighbours.")
flags.DEFINE_list("metrics", ["l2", "l1"], "Metrics to time.")
flags.DEFINE_list("peers", ["sklearn", "faiss"], "Peers to time (faiss is L2 only).")
flags.DEFINE_integer("train_limit", 0, "First N training images (0: all).")
flags.DEFINE_integer("test_limit", 0, "First N test images (0: all).")
flags.DEFINE_string("data_dir", None, "IDX folder.")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds (ours, then each peer); every time is the median over them.")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_fmnist_jax(x_train, y_train, x_test, k, metric):
    exact.predict(x_train, y_train, x_test[:300], k, metric)  # warm up: compile the chunk programs
    seconds, pred = _timed(lambda: exact.predict(x_train, y_train, x_test, k, metric))
    return seconds, pred


def run_sklearn(x_train, y_train, x_test, k, metric):
    from sklearn.neighbors import KNeighborsClassifier
    model = KNeighborsClassifier(n_neighbors=k, p=1 if metric == "l1" else 2, algorithm="brute",
                                 n_jobs=-1)
    xt, xq = x_train.reshape(len(x_train), -1).astype(np.float32), x_test.reshape(len(x_test), -1).astype(np.float32)
    return _timed(lambda: model.fit(xt, y_train).predict(xq))


def run_faiss(x_train, y_train, x_test, k, metric):
    if metric != "l2":
        return None
    import faiss
    xt = np.ascontiguousarray(x_train.reshape(len(x_train), -1), np.float32)
    xq = np.ascontiguousarray(x_test.reshape(len(x_test), -1), np.float32)

    def search():
        index = faiss.IndexFlatL2(xt.shape[1])
        index.add(xt)
        _, idx = index.search(xq, k)
        return exact.vote(y_train[idx], None, k, "uniform")

    return _timed(search)


PEERS = {"sklearn": run_sklearn, "faiss": run_faiss}


def main(argv):
    del argv
    ds = datasets.load(data_dir=FLAGS.data_dir)
    x_train, y_train, x_test, y_test = ds
    if FLAGS.train_limit:
        x_train, y_train = x_train[:FLAGS.train_limit], y_train[:FLAGS.train_limit]
    if FLAGS.test_limit:
        x_test, y_test = x_test[:FLAGS.test_limit], y_test[:FLAGS.test_limit]
    peak = roofline.matmul_peak_gflops()
    print(f"k-NN benchmark: {len(x_test)} queries x {len(x_train)} training images, k={FLAGS.k}; float32 "
          f"matmul peak of this machine: {peak:.0f} GFLOP/s")
    print(f"{'metric':<7}{'implementation':<16}{'seconds':>9}{'accuracy':>10}{'peer/ours':>11}{'GFLOP/s':>9}{'of peak':>9}")
    pairs = len(x_test) * len(x_train) * int(np.prod(x_train.shape[1:]))

    def roof(metric, seconds):
        return roofline.rate_columns((2 if metric == "l2" else 3) * pairs / seconds, peak)

    for metric in FLAGS.metrics:
        # Interleaved rounds, so that a slow spell of the machine falls on every implementation.
        times, preds = {}, {}
        for _ in range(max(1, FLAGS.repeats)):
            for name, run in [("fmnist_jax", run_fmnist_jax), *((p, PEERS[p]) for p in FLAGS.peers)]:
                result = run(x_train, y_train, x_test, FLAGS.k, metric)
                if result is not None:
                    times.setdefault(name, []).append(result[0])
                    preds[name] = result[1]
        ours_s = float(np.median(times["fmnist_jax"]))
        for name, seconds in times.items():
            seconds = float(np.median(seconds))
            print(f"{metric:<7}{name:<16}{seconds:9.2f}{(preds[name] == y_test).mean():10.4f}"
                  f"{seconds / ours_s:11.2f}{roof(metric, seconds)}", flush=True)

if __name__ == "__main__":
    app.run(main)
