# Two entry points for a fresh clone: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean device-wheels

$(STAMP): pyproject.toml Makefile
	@command -v ffmpeg >/dev/null || { echo "ffmpeg is missing: run 'apt-get install -y ffmpeg' (Debian/Ubuntu) or 'brew install ffmpeg'" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU torch wheel first: otherwise a dependency would pull a CUDA build of several GB.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/plm-index demo --workdir demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# What the lent GPU machine (Python 3.12, no package registry, no Beam) needs to run
# `python -m bench --only gpu` from the source tree; `.whl/` is git-ignored and carried (README, GPU run).
device-wheels: $(STAMP)
	rm -rf .whl
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl av==18.1.0 pydantic==2.14.3 \
		pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions tenacity==9.2.1
	du -sh .whl

clean:
	rm -rf $(VENV) demo-out
