# Story-image alignment verification: the whole study, reproducibly.
#   make run-all [PROFILE=smoke|quick|full]   run every chapter, render the reports
#   make test                                 unit tests + a smoke run of every chapter
#   make bench [ARGS="--quick --skip-series"]  speed and memory of the parts, as ratios
#   make bench ARGS=--quick-series            the quick profile's whole series, cold, offline (its cost)
#   make mutation [ARGS="spatial objects"]    mutation score of the rules (mutmut; not part of make test)
#   make sync                                 after editing a chapter's .py: its #@save module (make lib) and .ipynb
# Every target sets up .venv first (from requirements.lock), so a fresh clone needs nothing else.

PROFILE ?= quick
NB ?=
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := story-align

.PHONY: setup run-all run-one test bench mutation lib sync lock clean help
.DEFAULT_GOAL := help

help:
	@sed -n "1,8p" Makefile

setup: $(STAMP)

$(STAMP): requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (found " + sys.version.split()[0] + ")"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))"
	@touch $(STAMP)

run-all: setup
	$(PY) -m helpers.runner --profile $(PROFILE)

run-one: setup
	@test -n "$(NB)" || { echo "usage: make run-one NB=03 [PROFILE=smoke]"; exit 2; }
	$(PY) -m helpers.runner --profile $(PROFILE) --only $(NB)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m helpers.bench $(ARGS)

# Mutation testing, a dev tool kept out of requirements.lock: mutmut lives in its own venv,
# which sees the project's packages through a .pth file (shared packages pinned by the lock).
MUTATION_VENV := .venv-mutation
MUTMUT := mutmut==3.8.1

$(MUTATION_VENV)/.installed: $(STAMP)
	$(PY) -m venv $(MUTATION_VENV)
	$(MUTATION_VENV)/bin/python -m pip install --quiet "$(MUTMUT)" -c requirements.lock
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
	  > "$$($(MUTATION_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/project-venv.pth"
	@touch $@

mutation: $(MUTATION_VENV)/.installed
	$(MUTATION_VENV)/bin/python tests/mutation.py $(ARGS)

# Collect every chapter's #@save cells into its generated module in helpers/ (helpers/lib.py).
lib: setup
	$(PY) -m helpers.lib

# After editing a chapter's .py: regenerate its module and its notebook (percent-format pairs).
sync: lib
	$(VENV)/bin/jupytext --update --to ipynb notebooks/[0-9][0-9]_*.py

# Re-resolve requirements.in into exact pins (CUDA wheels are Linux x86_64 only).
lock: setup
	$(PY) -m pip install --quiet -r requirements.in
	$(PY) -m pip freeze --exclude-editable | sort \
	  | sed -E '/^(nvidia-|triton|cuda-)/ s/$$/ ; sys_platform == "linux" and platform_machine == "x86_64"/' > requirements.lock

clean:
	rm -rf $(VENV) $(MUTATION_VENV) mutants outputs/smoke outputs/quick outputs/full outputs/bench.json
