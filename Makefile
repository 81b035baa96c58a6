# `make run`: set up .venv and run the main job on the local device (GPU if there is one, else CPU).
# `make test`: set up .venv and run the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

comma := ,
# The cupy extra that matches the NVIDIA driver (CUDA 13 drivers report 13.x); without one, nvrtc
# (NVRTC and headers only), so the kernels are compiled and their SASS read on every machine.
CUDA_MAJOR := $(shell nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n1)
EXTRAS := test$(comma)$(if $(filter 12,$(CUDA_MAJOR)),cuda12,$(if $(filter 13 14 15,$(CUDA_MAJOR)),cuda13$(comma))nvrtc)

.PHONY: run test quick clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m gpuroof compile
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gpuroof run

quick: $(STAMP)
	$(VENV)/bin/gpuroof run --quick

# GPUROOF_REQUIRE_NVRTC: the NVRTC compile check fails instead of skipping when it cannot run.
test: $(STAMP)
	GPUROOF_REQUIRE_NVRTC=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
