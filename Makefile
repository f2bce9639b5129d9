# tvface: `make book` (set-up + every notebook on the cpu-demo profile + the site) and `make test`.
# Both create/update .venv/, install the pinned environment and prepare the ICT model; repeated
# runs skip what has not changed (stamps under .venv/ and per-notebook outputs).

SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.tvface-installed
PROFILE ?= cpu-demo

# ../shared (media + ICT-FaceKit archive) when it sits beside the checkout and no setting names one.
export TVFACE_SHARED ?= $(if $(wildcard ../shared/assets),$(abspath ../shared),)
export TVFACE_ASSETS ?= $(HOME)/.cache/tvface/assets
export TVFACE_DATA ?= $(HOME)/.cache/tvface/data
ICT_MODEL := $(TVFACE_ASSETS)/ict_facekit_model.npz

NOTEBOOKS := $(sort $(wildcard notebooks/*.py))
EXECUTED := $(patsubst notebooks/%.py,book/generated/%.ipynb,$(NOTEBOOKS))
LIB_SOURCES := $(shell find tvface -name '*.py') $(wildcard data/configs/*.yaml)

.PHONY: all setup assets book test test-all bench lint lock clean distclean help
all: book

help:
	@echo "make book     set up .venv, prepare assets, run every notebook ($(PROFILE)), build the site"
	@echo "make test     set up, then the test suite (notebooks on the smoke profile + book build)"
	@echo "make bench    benchmark scripts (renderer, deformable conv, temporal encoder, collection)"
	@echo "make lint     ruff over the package, tests and benchmarks"
	@echo "make lock     regenerate requirements/constraints.txt from .venv"

$(STAMP): pyproject.toml requirements/constraints.txt requirements/face-nodeps.txt
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[book,dev,face]'
	$(PIP) install --quiet --disable-pip-version-check --no-deps -c requirements/constraints.txt -r requirements/face-nodeps.txt
	@touch $@

setup: $(STAMP)

$(ICT_MODEL): | $(STAMP)
	$(VENV)/bin/tvface assets build-ict --out $@

assets: $(ICT_MODEL)
	@$(VENV)/bin/tvface assets

book/generated/%.ipynb: notebooks/%.py $(ICT_MODEL) $(LIB_SOURCES)
	$(VENV)/bin/tvface book run --profile $(PROFILE) --out book/generated $<

book: $(STAMP) $(ICT_MODEL) $(EXECUTED)
	$(VENV)/bin/tvface book build
	@echo "site: book/_build/html/index.html"

test: $(STAMP) $(ICT_MODEL)
	$(PY) -m pytest -q

test-all: $(STAMP) $(ICT_MODEL)
	$(PY) -m pytest -q -m ''

bench: $(STAMP) $(ICT_MODEL)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check tvface tests benchmarks

lock: $(STAMP)
	@{ echo "# Lock file: every package of the working environment at the versions tested (pip freeze)."; \
	   echo "# Regenerate with \`make lock\` after changing pyproject.toml."; \
	   $(PIP) freeze --exclude-editable --disable-pip-version-check | grep -v '^-e'; } > requirements/constraints.txt

clean:
	rm -rf book/_build book/generated .pytest_cache

distclean: clean
	rm -rf $(VENV)
