# `make demo` and `make test` each build .venv on a fresh machine: torch first (pinned CPU wheel), then the rest.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mobilize-installed

# the suite runs on every core (pytest-xdist): each module whole on one worker, the modules with the most slow tests
# first (tests/conftest.py orders them)
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
XDIST     := -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder

.PHONY: demo test test-fast test-onnx-only lint clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[all,dev,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mobilize demo

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

# an install holding only mobilize[onnx] (no coremltools, litert, jax, scikit-learn) exports and verifies
test-onnx-only:
	test -x $(VENV)-onnx/bin/python || $(PYTHON) -m venv $(VENV)-onnx
	$(VENV)-onnx/bin/python -m pip install -q --upgrade "pip>=24"
	$(VENV)-onnx/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	$(VENV)-onnx/bin/python -m pip install -q -c constraints.txt -e ".[onnx]" pytest pytest-timeout
	$(VENV)-onnx/bin/python -m pytest -q -p no:cacheprovider tests/extras/test_onnx_only_install.py

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(VENV)-onnx mobilize-demo .pytest_cache
