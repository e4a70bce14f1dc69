# papo_verl — the two set-up commands are `make demo` (the main job) and `make test` (the suite).
# Both create/update the virtual environment first, installing torch before anything else so that
# pip never picks a CUDA build of torch.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.papo-installed

.PHONY: venv demo demo-compare demo-seeds selfcheck test clean-venv

$(STAMP): setup.py pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# the main job: verl's trainer with PAPO on CPU (DEMO_STEPS=N shortens it); outputs/demo/<timestamp>/
demo: venv
	$(PY) -m papo_verl.demo

# PAPO and GRPO on the same config, plotted together
demo-compare: venv
	$(PY) -m papo_verl.demo --compare

# PAPO, GRPO and DAPO with 3 seeds each, then papo-compare (examples/cpu_multiseed.sh)
demo-seeds: venv
	PYTHON=$(PY) bash examples/cpu_multiseed.sh

# what verl sees registered, and a worked polarity example (seconds)
selfcheck: venv
	$(PY) -m papo_verl.selfcheck

test: venv
	$(PY) -m pytest tests

clean-venv:
	rm -rf $(VENV)
