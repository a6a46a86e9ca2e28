# One entry point: `make demo` sets everything up and runs the main job; `make test` runs the tests.
# The virtual environment gets torch==2.13.0 (the CPU build) before the project, so that the
# project's torch range never pulls a multi-GB CUDA build.  TORCH_PIP_ARGS can point pip at
# another index, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lungcds-installed
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test heavy soak install lint clean

$(BIN)/python:
	@echo "make: creating the virtual environment $(VENV) with $(PYTHON), then upgrading pip in it"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "make: installing torch==2.13.0 (the CPU build) into $(VENV) from $(if $(TORCH_PIP_ARGS),pip $(TORCH_PIP_ARGS),pip's configured index)"
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	@echo "make: installing lungcds (editable) with its dependencies and the [test] extras into $(VENV)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lungcds demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Published networks on real series, the painted-lesion suites, the 20-series load test and the lost-worker tests (minutes) are kept out of `make test`.
heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS)

# The soak (at least 10 minutes at a steady rate, flat memory) is kept out of `make test`.
soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -s $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy server models dicom_node reports

clean:
	rm -rf $(VENV) .pytest_cache
