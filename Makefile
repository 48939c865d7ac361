# herald_tf: the README's two commands are `make demo` and `make test`; both set up first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := bazel-bootstrap g++ iproute2
export TF_CPP_MIN_LOG_LEVEL ?= 2
STAMP := $(VENV)/.herald-setup

.PHONY: setup build gpu-ops demo demo-local test test-all lint bench clean

# Idempotent: apt packages when missing, the venv and its packages when requirements change,
# and the op library when a source changes.
setup: $(STAMP) build $(VENV)/.herald-horovod

# Horovod 0.28.1 built from source against this TensorFlow (DESIGN §9; a cached wheel is reused).
$(VENV)/.herald-horovod: $(STAMP) tools/install_horovod.sh
	tools/install_horovod.sh $(VENV)
	touch $@

$(STAMP): requirements.txt requirements-nodeps.txt
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

NATIVE_SOURCES := $(shell find kernels ops -name '*.cc' -o -name '*.h' 2>/dev/null) BUILD WORKSPACE tools/herald.bzl
herald_tf/lib/_herald_ops.so: $(NATIVE_SOURCES) $(STAMP)
	$(PY) tools/build_ops.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . >/dev/null

build: $(STAMP) herald_tf/lib/_herald_ops.so

DEMO_DATA := data/demo_criteo.tsv
DEMO_FLAGS := --model wdl_criteo --comm Hybrid --cache lru --bound 0 --bsp 0 --nepoch 2 --all \
	--batch-size 256 --embedding-size 16 --cache-limit-ratio 0.1 --mode herald --data $(DEMO_DATA)

# The main job: synthetic Criteo-format data, WDL on 2 workers + 2 PS (examples/config/dist.yml).
demo: setup $(DEMO_DATA)
	$(PY) -m herald_tf.launch -c examples/config/dist.yml -- $(PY) examples/ctr/run_herald.py \
	  $(DEMO_FLAGS) --metrics-json data/demo_metrics.json

$(DEMO_DATA):
	mkdir -p data
	$(PY) -m herald_tf.data.synthetic --out $@ --samples 100000 --scale 0.001 --seed 1

# The single-process walkthrough of the Keras API (local mode).
demo-local: setup
	$(PY) examples/demo.py

# TF GPU kernels (DEVICE_GPU) over the CUDA core, compiled whenever nvcc is present: compile and
# load only here (no GPU); the script says so and exits 0 without nvcc.
gpu-ops: setup
	PYTHON=$(PY) kernels/cuda/build_tf_gpu_ops.sh build/tf_gpu

test: setup gpu-ops
	$(PY) -m pytest -q -m "not slow" tests

test-all: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check herald_tf tests benchmarks examples tools

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	-bazel --batch clean
	rm -f herald_tf/lib/*.so herald_tf/lib/BUILT_FOR_TF
