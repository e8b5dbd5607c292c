# Set-up and everyday commands. `make demo` runs the main job, `make test` the test suite.
# GPU users: make TORCH='torch==2.13.0' PIP_EXTRA='--extra-index-url https://download.pytorch.org/whl/cu128'
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP_EXTRA ?=
UI_ARGS ?=
BIN := $(VENV)/bin

.PHONY: install demo demo-downstream test test-slow test-all ui clean

install: $(VENV)/.installed

# torch is pinned in the same pip command as the project, so no other requirement can pull a
# different (multi-GB CUDA) build.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_EXTRA) '$(TORCH)' -e '.[dev]'
	touch $@

# The CPU demo sweep end to end (queue, work, figures), then the paper's figures from its results.
demo: install
	$(BIN)/symattn run experiments/quick.yaml --devices cpu
	$(BIN)/symattn figures acl2024
	@echo "The demo's regime (init_std 0.07) was chosen for vanilla's speed: it shows the pipeline, not an answer."
	@echo "The primary study (experiments/primary.yaml, analysis/results/primary) is the answer this suite gives."

# The downstream path on the CPU: kept checkpoints of the three variants fine-tuned on trec6, then
# the offline proxy score over checkpoints and its crossing table.
demo-downstream: install
	$(BIN)/symattn run experiments/downstream-quick.yaml --devices cpu

test: install
	$(BIN)/ruff format --check --quiet . && $(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest

# Longer tests and those that reach the package registry; CI runs them after `make test`.
test-slow: install
	$(BIN)/python -m pytest -m "slow or network"

# The MLflow UI on mlflow.db (artifacts included) at http://127.0.0.1:5000, until Ctrl-C;
# `make ui UI_ARGS=--optuna` adds optuna-dashboard on optuna.journal at :8080.
ui: install
	$(BIN)/symattn ui $(UI_ARGS)

clean:
	rm -rf analysis/figures mlartifacts checkpoints lightning_logs .pytest_cache
