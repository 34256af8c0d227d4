# Two commands: `make demo` and `make test`. Both create the virtual environment first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
# PyTorch: without an NVIDIA GPU (no nvidia-smi), the CPU build from PyTorch's CPU index, on purpose:
# a plain `pip install torch` pulls the CUDA build (several GB) on x86-64 Linux. With a GPU, the default
# (CUDA) build from PyPI. Override both, or install torch into the venv first (a Jetson: see README).
HAVE_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAVE_GPU),torch==2.13.0,torch==2.13.0+cpu)
TORCH_INDEX ?= $(if $(HAVE_GPU),,https://download.pytorch.org/whl/cpu)
# The real `launch` and `launch_ros` for the launch-file tests (not on the package index).
LAUNCH_WHEELS ?= ../shared/wheels/ros-launch

.PHONY: env demo test launch-wheels clean

env: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || { \
	  echo "PyTorch: installing $(TORCH_SPEC)$(if $(TORCH_INDEX), (the CPU build, from $(TORCH_INDEX)), (the default build: CUDA on x86-64 Linux))"; \
	  $(PY) -m pip install -q --no-deps "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) && \
	  $(PY) -m pip install -q "$(TORCH_SPEC)"; }  # torch's own dependencies from the usual index
	$(PY) -m pip install -q -e ".[ros,demo,test]"
	touch $(STAMP)

launch-wheels: $(STAMP)
	@if $(PY) -c "import launch_ros" 2>/dev/null; then :; \
	elif [ -d $(LAUNCH_WHEELS) ]; then \
	  $(PY) -m pip install -q osrf-pycommon lark pyyaml ros-ament-index-python && \
	  $(PY) -m pip install -q --no-deps $(LAUNCH_WHEELS)/*.whl; \
	else echo "no $(LAUNCH_WHEELS): the launch-file tests will skip (CI has it)"; fi

demo: $(STAMP)
	$(PY) -m groot_sage_ros.demo --out $(DEMO_DIR)

test: $(STAMP) launch-wheels
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q test

clean:
	rm -rf $(DEMO_DIR) build install log *.egg-info
