# Two entry points: `make demo` (the main job, offline) and `make test` (lint, types, tests).
# Both build .venv from nothing. torch/torchvision are pinned here (not in the package
# metadata) because these exact wheels are the CPU-compatible pair this project is tested with.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH_PIN = torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install lint typecheck pytest browser rscript clean

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/inquire demo

test: $(VENV)/.installed browser rscript lint typecheck pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# A headless Chromium for the web-page tests (Debian's package; the tests skip without it).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: browser tests will be skipped"; }

# Rscript for the check that INQUIRE-Search's case-study computations read our export
# (Debian's r-base-core; the test skips without it).
rscript:
	@command -v Rscript >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends r-base-core >/dev/null) \
		|| echo "Rscript not installed: the R export check will be skipped"; }

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck:
	$(BIN)/mypy

pytest:
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
