# Two commands: `make demo` and `make test`. Both create the virtual environment first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU PyTorch by default (a GPU machine: set TORCH_SPEC to the CUDA build you want, or pre-install torch).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: env demo test clean

env: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[ros,demo,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m groot_sage_ros.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q test

clean:
	rm -rf $(DEMO_DIR) build install log *.egg-info
