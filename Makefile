# Entry points: `make test` and `make lint` (what CI runs), `make test-fast` (the suite without the tests
# marked slow: CLI subprocesses, long runs) and `make demo` (the main job on the built-in sim).
# All create .venv with Python 3.12 when needed and reinstall only when pyproject.toml changed.

VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-fast lint demo benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then \
		py=$$(scripts/find_python312.sh) || exit 1; \
		echo "Creating $(VENV) with $$py"; rm -rf $(VENV); $$py -m venv $(VENV) || exit 1; \
	fi
	$(PYTHON) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow"

# Rules, exclusions (.venv, build, outputs) and their reasons: [tool.ruff] in pyproject.toml.
lint: $(STAMP)
	$(PYTHON) -m ruff check .

demo: $(STAMP)
	$(PYTHON) scripts/demo.py

benchmark: $(STAMP)
	$(PYTHON) scripts/benchmark_sim.py

clean:
	rm -rf $(VENV) outputs build *.egg-info
