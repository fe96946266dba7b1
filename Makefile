# The README's two commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test chromium demo demo-seeds lint bench clean

install: $(STAMP)

# Re-install only when the package metadata or the pins change; otherwise this is instant.
# constraints.txt pins torch and torchvision to the tested builds (pyproject.toml only gives
# lower bounds, as a library should).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: install chromium
	$(BIN)/python -m pytest

# rvsl-search's results page is tested in headless Chromium, a system package: installed here
# (Debian/Ubuntu, as root) when missing; otherwise the browser tests fail saying how to.
chromium:
	@if [ -z "$$RVSL_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 \
	    && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; \
	  else \
	    echo "make: Chromium is missing, so the browser tests will fail;" \
	      "install it with: sudo apt-get install -y chromium" >&2; \
	  fi; \
	fi

# The main job: build the demo world, train baseline + three RVSL stages, print the table.
demo: install
	$(BIN)/rvsl-train

# The demo once per seed (not part of `make test`), then mean ± std per model and RVSL's gain
# per seed in outputs/demo_seeds/<time>/seeds.md. SEEDS_ARGS="--seeds 1 2 3 4 5 --ablations"
# (--ablations: stage 3 without EA, P2P or priors too); Hydra overrides pass through.
demo-seeds: install
	$(BIN)/python scripts/demo_seeds.py $(SEEDS_ARGS)

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# The performance suite: every script in scripts/, one JSON under outputs/bench/ (~18 min on
# 2 CPU cores; on a GPU machine it measures the GPU). BENCH_ARGS="--only training" etc.
bench: install
	$(BIN)/python scripts/bench_suite.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
