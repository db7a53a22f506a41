# All set-up happens here: `make demo` and `make test` work on a fresh machine.
# torch==2.13.0 is installed first: its CPU wheel is on the machine, whereas a bare `torch`
# requirement would pull a multi-GB CUDA build. The package's range (torch>=2.4) then adds nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: venv test demo bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,examples]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest

demo: venv
	$(PY) examples/quickstart.py

bench: venv
	$(PY) benchmarks/optimizer_step.py
	$(PY) benchmarks/monitor_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info lightning_logs
