# Setup, main job, tests and benchmarks. Every target creates the virtual environment first
# (idempotent: it is rebuilt only when pyproject.toml changes).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Python 3.12 is required (lerobot 0.6); a pyenv-managed 3.12 is found when no python3.12 is on PATH.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p || echo $$p; } && break; done)
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test lint bench gpu-wheels clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# torchcodec needs system FFmpeg libraries; without it lerobot decodes with PyAV, which we use.
	$(PY) -m pip uninstall -q -y torchcodec
	touch $(STAMP)

# The main job on the embedded default: local sim, local dataset, offline logging.
demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -x -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) scripts/bench_env.py
	$(PY) scripts/bench_expert.py

# Wheels of every dependency but torch and CUDA, for a GPU host without network (scripts/bench_gpu.py).
gpu-wheels: $(STAMP)
	mkdir -p dist/gpu-wheels
	$(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|torchvision|torchaudio|triton|nvidia-|cuda-)' \
		> dist/gpu-wheels/requirements.txt
	$(PY) -m pip wheel -q --no-deps -w dist/gpu-wheels -r dist/gpu-wheels/requirements.txt
	@echo "copy dist/gpu-wheels to the host, then: pip install --no-deps --no-index --target SITE dist/gpu-wheels/*.whl"
	@echo "and run: python scripts/bench_gpu.py --site SITE"

clean:
	rm -rf $(VENV) outputs data wandb
