# Each target sets up .venv itself. The environment is keyed on the hash of pyproject.toml and
# constraints.txt: when either changes, the next target reinstalls; otherwise it is reused.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ENV_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(ENV_HASH)
PYTEST_ARGS ?=

.PHONY: env test lint format demo bench proto clean

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

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/polypsynth demo --out runs/demo

# CPU benchmarks: writes benchmarks/results/*.json and prints the tables of benchmarks/README.md.
# The GPU table comes from `$(BIN)/python benchmarks/gpu_sampling.py` on a machine with a GPU,
# which this target also runs when torch sees one.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py --steps 30
	$(BIN)/python benchmarks/bench_sampling.py --sd15
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_grpc.py
	@if $(BIN)/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python benchmarks/gpu_sampling.py; fi

# Regenerate the gRPC stubs from protos/ (committed; a test fails when they are stale).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) runs .pytest_cache
