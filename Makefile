# kvm-warden: `make test` and `make demo` set up everything they need (Debian 12, root).
# Debian's own interpreter: the HA controller runs as its own user, who must be able to run it
# (an interpreter under /root, e.g. pyenv's, is not theirs to run).
PYTHON ?= /usr/bin/python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench lint typecheck unit deps venv clean lab-up lab-down image soak screenshots deb

deps:
	@scripts/install-deps.sh image

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# setuptools' informational build warnings are noise for a user running make
	PYTHONWARNINGS=ignore $(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: deps $(STAMP)

lint: venv
	$(BIN)/ruff check controller probes reconcilers tests bench lab
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

test: venv lint typecheck
	$(BIN)/python -m pytest tests

unit: venv
	$(BIN)/python -m pytest tests/unit -q

demo: venv
	$(BIN)/python -m lab.demo

demo-simulated: venv
	$(BIN)/kvm-warden run --simulate

bench: venv
	$(BIN)/python bench/observe.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/scrape.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/attacks.py
	$(BIN)/python bench/preview.py
	$(BIN)/python bench/capacity.py
	$(BIN)/python bench/lab.py
	$(BIN)/python bench/release.py

# The README's pictures of the web view, taken by its browser tests (test_web_glance.py, test_web_operate.py)
screenshots: venv
	KVM_WARDEN_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q tests/integration/test_web_glance.py tests/integration/test_web_operate.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build

lab-up: venv
	$(BIN)/python -m lab.lab up --with-warden config/desired-state.example.yaml

# An hour of seeded faults on the lab, judged by an independent checker (lab/chaos.py,
# lab/checker.py); the report goes to soak-report/ (report.json, report.html):
# make soak MINUTES=10 SEED=42 FAULTS=kill-guest,partition
MINUTES ?= 60
SOAK_ARGS = --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) $(if $(FAULTS),--faults $(FAULTS))
soak: venv
	$(BIN)/python -m lab.chaos $(SOAK_ARGS)

lab-down:
	$(BIN)/python -m lab.lab down

image: venv
	scripts/build-image.sh

# The Debian packages, one per release: build/deb/kvm-warden_VERSION~deb12_ARCH.deb and ~deb13
# (scripts/build-deb.sh says what they hold; the other release's is built in a clean root of it)
deb: venv
	RELEASE=12 scripts/build-deb.sh
	RELEASE=13 scripts/build-deb.sh
