# Two commands do all the set-up on a fresh Debian/Ubuntu machine:
#   make run    virtual environment + package + data, then the main job
#   make test   the same set-up, then pytest
# Both are idempotent: the second time they only run the job or the tests.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install whenever the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cksum setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
DEBIAN_DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test env data knn cnn-demo speedrun reproduce bench clean

run: env data knn cnn-demo

# Two pytest workers: most of the suite's time is XLA compiling small programs, one core each.
TEST_WORKERS ?= 2

test: env data
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist=worksteal --durations=15

env: $(STAMP)

$(STAMP):
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || $(SUDO) apt-get install -y python3-venv
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV) || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist package (the canonical upstream bytes).
# Elsewhere, set FMNIST_DATA_DIR or put the four IDX files in data/fashion_mnist/.
data:
	@if [ -f $(DEBIAN_DATA) ] || [ -n "$$FMNIST_DATA_DIR" ] || [ -f data/fashion_mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "data: Fashion-MNIST found"; \
	elif command -v apt-get >/dev/null; then \
	  ($(SUDO) apt-get install -y dataset-fashion-mnist || \
	   ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist)) || \
	  echo "data: could not install dataset-fashion-mnist; real-data tests will be skipped"; \
	else \
	  echo "data: no apt-get; put the IDX files in data/fashion_mnist/ or set FMNIST_DATA_DIR"; \
	fi

# The main job: the k-NN baselines of the earlier projects on the full 60k x 10k set.
knn: env data
	$(PY) -m experiments.knn --k=5 --metric=l1 --run_name=knn_l1_k5
	$(PY) -m experiments.knn --k=5 --metric=l2 --run_name=knn_l2_k5

# A short CNN demo: seed 003's net, 2 epochs on 48,000 images (about 2 minutes on 2 CPU cores).
cnn-demo: env data
	$(PY) -m experiments.cnn --preset=demo --run_name=cnn_demo
	$(PY) -m experiments.evaluate --run=cnn_demo --which=best

# The CPU speedrun (fmnist_jax/presets/speedrun.py), one seed, from scratch: its test accuracy and
# the minutes from the command's start (compilation and evaluation included).
speedrun: env data
	$(PY) -m experiments.cnn --preset=speedrun --run_name=speedrun_make --overwrite
	@$(PY) -c "import json; s = json.load(open('results/speedrun_make/summary.json')); \
	  print(f\"speedrun: test accuracy {s['test_accuracy_best']:.4f}, with {s['tta']} TTA \
	  {s['test_accuracy_best_tta']:.4f}, {s['wall_seconds'] / 60:.1f} minutes from the command's start\")"

# Every preset of the README's results table, each member its own resumable run; then records and
# the table. Days on two CPU cores: rerun after an interruption and it continues.
reproduce: env data
	$(PY) -m experiments.reproduce

bench: env
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks.knn
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.ensemble

clean:
	rm -rf $(VENV) *.egg-info
