# The README's commands. All set-up happens here: `make demo`, `make lint` and `make test` work on a fresh machine.
# torch is installed first: its CPU wheel (torch==2.13.0) is on this project's machines, whereas a bare `torch`
# requirement would pull a multi-GB CUDA build. The package then installs under the constraints file of
# versions the suite passed with (CONSTRAINTS), so a new upstream release cannot turn CI red overnight.
# Installing the package compiles callbacks/_bucket_count.c with the machine's C compiler (setup.py); the suite
# checks that it was built.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
CONSTRAINTS ?= requirements/ci.txt
EXTRAS ?= test,examples,lint
# PIP_CONSTRAINT also reaches pip's isolated build environment (setuptools, wheel)
PIP_INSTALL = PIP_CONSTRAINT="$(CONSTRAINTS)" $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: venv lint test test-latest test-oldest test-gpu demo tensorboard bench clean

$(VENV)/.installed: setup.cfg setup.py pyproject.toml callbacks/_bucket_count.c $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "$(TORCH)" $(TORCH_INDEX)
	$(PIP_INSTALL) $(PIP_FLAGS) -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

test: venv
	$(PY) -m pytest

# The newest release of every dependency (torch stays $(TORCH); `make test-latest TORCH=torch` checks torch too)
test-latest:
	$(MAKE) test VENV=.venv-latest CONSTRAINTS= PIP_FLAGS="--upgrade --upgrade-strategy eager"

# The floors declared in setup.cfg, pinned in requirements/oldest.txt (tests/test_packaging.py keeps them equal)
test-oldest:
	$(MAKE) test VENV=.venv-oldest CONSTRAINTS=requirements/oldest.txt PIP_FLAGS="--only-binary=:all:"

# The tests marked `cuda`, on a machine with a GPU and a CUDA build of torch, e.g.
# `make test-gpu VENV=.venv-gpu TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"`
test-gpu: venv
	$(PY) -c "import sys, torch; torch.cuda.is_available() or sys.exit(f'test-gpu: torch {torch.__version__} sees no GPU')"
	$(PY) -m pytest -m cuda

demo: venv
	$(PY) examples/quickstart.py --log-dir runs
	@echo "View the logs: make tensorboard  (TensorBoard on runs/ at http://localhost:6006)"

tensorboard: venv
	$(PY) -m tensorboard.main --logdir runs --port 6006

bench: venv
	$(PY) benchmarks/optimizer_step.py
	$(PY) benchmarks/monitor_overhead.py
	$(PY) benchmarks/end_to_end.py

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest build *.egg-info lightning_logs callbacks/*.so
