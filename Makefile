# `make test` and `make demo` work from a fresh clone: they build .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv venv-dev venv-ref test test-fast demo lint bench clean

# torch is pinned here, not in requirements.lock, because the two environments differ:
# - `make venv` / `make demo` (a user's install): torch 2.13.0, a CPU wheel from disk here;
#   an unpinned torch would pull a multi-GB CUDA build.
# - `make test` (the dev environment) adds the open_clip extra, which needs torchvision.
#   No torchvision wheel imports beside the CPU torch 2.13.0 (torchvision 0.28.0 fails with
#   "operator torchvision::nms does not exist"), so the dev environment takes the newest
#   pair that imports on CPU: torch 2.14.1 with torchvision 0.29.1 (a CUDA build, larger,
#   but it runs on CPU).
TORCH     := torch==2.13.0
DEV_TORCH := torch==2.14.1 torchvision==0.29.1
DEV_STAMP := $(VENV)/.installed-dev

venv: $(STAMP)

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml requirements.lock | $(VENV)/bin/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml requirements.lock | $(VENV)/bin/python
	$(BIN)/pip install -q $(DEV_TORCH)
	$(BIN)/pip install -q -c requirements.lock $(DEV_TORCH) -e '.[dev,open_clip,reference]'
	touch $(STAMP) $(DEV_STAMP)

venv-dev: $(DEV_STAMP)

# The reference environment: the owners' laion_clap 1.1.7 and msclap 1.3.4, which cannot join
# the dev environment (numpy < 2, transformers < 5), pinned in their own lock file, CPU torch
# 2.13.0, with a tiny hub cache for the names they load (tests/reference/). tests/test_reference.py
# runs their code there on clapkit's inputs and fails, never skips, when it is missing.
REF       := .venv-ref
REF_STAMP := $(REF)/.installed

$(REF_STAMP): tests/reference/requirements.lock tests/reference/install.py tests/reference/tiny_hub.py
	rm -rf $(REF)
	$(PY) -m venv $(REF)
	$(REF)/bin/pip install -q --upgrade pip
	$(REF)/bin/pip install -q $(TORCH)
	$(REF)/bin/pip install -q --no-deps -r tests/reference/requirements.lock
	$(REF)/bin/python tests/reference/install.py
	$(REF)/bin/python tests/reference/tiny_hub.py $(REF)/hf-home
	touch $(REF_STAMP)

venv-ref: $(REF_STAMP)

test: $(DEV_STAMP) $(REF_STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(DEV_STAMP) $(REF_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: venv
	$(BIN)/clapkit demo --out demo-out

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: venv
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(REF) demo-out .pytest_cache
