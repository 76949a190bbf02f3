#!/usr/bin/env bash
# The GPU checks of issue #28 in one lease: what a session with a lent CUDA machine runs.
#
#   here (no GPU):   benchmarks/gpu_session.sh prepare
#                    downloads the wheels the device image lacks into .whl/ and copies the
#                    embedded model's tokenizer into .gpu/tok/ (both ignored by git, ≈ 60 MB)
#   there (device):  run(command="bash benchmarks/gpu_session.sh run", carry=[".whl", ".gpu"],
#                        timeout_s=590)
#
# `run` writes its raw output under $OUT (it comes back; copy it to benchmarks/results/):
#   e2e.json / e2e.log   the gpu-8gb-qlora preset end to end through the API the CLI calls, twice,
#                        against its bare training step (bench_e2e.py), on a random model of
#                        Qwen3-4B's shape with the embedded tokenizer (the device reaches no hub)
#   longest.jsonl        first, the offloader's gradients against none on CUDA (bit for bit:
#                        the side stream and the fetch ahead must not change a value); then
#                        Llama-3.1-8B QLoRA r32 all-linear batch 1 with every long-context lever
#                        (offloading, bf16 residual, MLP chunks): the estimate's longest length for
#                        a 24 GB card and 10% either side under a 23 GB allocator cap, two optimizer
#                        steps each, measured peak against the estimate; tokens/s at 2k, 16k and
#                        the longest; then each lever alone (bench_gpu.py --longest)
# Each part has its own time limit, so one that hangs leaves the other's numbers.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)

prepare() {
    local py=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
              --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
              --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    mkdir -p .git/info
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .whl .gpu && mkdir -p .whl .gpu/tok
    # the device image has torch, accelerate, peft, safetensors, tokenizers, pyyaml, psutil;
    # these it lacks or has at another version than requirements.txt
    python3 -m pip download -q "${py[@]}" -d .whl \
        "$(grep '^bitsandbytes==' requirements.txt)" "$(grep '^transformers==' requirements.txt)" \
        "$(grep '^peft==' requirements.txt)" "$(grep '^sqlite-utils==' requirements.txt)" \
        sqlite-fts4 click-default-group || exit 1
    local tok
    tok=$(ls -d .venv/.test-cache/*/ | head -1)
    [ -n "$tok" ] || { echo "no converted embedded model in .venv/.test-cache: run make test-model first"; exit 1; }
    cp "$tok"/tokenizer.json "$tok"/tokenizer_config.json "$tok"/chat_template.jinja .gpu/tok/
    du -sh .whl .gpu
}

run() {
    OUT=${OUT:-/tmp/gpu-session}
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$ROOT || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
    # 1. a random model of Qwen3-4B's shape (the gpu-8gb-qlora preset's model) with the
    #    embedded tokenizer, in RAM-backed /dev/shm
    python3 - <<'PY' || exit 1
import json, shutil, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from studio import memory_advice as ma
tok = AutoTokenizer.from_pretrained(".gpu/tok")
cfg = dict(ma.catalog("models")["qwen3-4b"], vocab_size=len(tok))
with torch.device("cuda"):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.bfloat16)
model.save_pretrained("/dev/shm/qwen3-4b-random")
tok.save_pretrained("/dev/shm/qwen3-4b-random")
shutil.copy(".gpu/tok/chat_template.jinja", "/dev/shm/qwen3-4b-random/")
print("saved", sum(p.numel() for p in model.parameters()) / 1e9, "B parameters")
PY
    timeout 240 python3 benchmarks/bench_e2e.py --preset gpu-8gb-qlora --model /dev/shm/qwen3-4b-random \
        --steps 24 --out "$OUT/e2e.json" > "$OUT/e2e.log" 2>&1
    echo "e2e exit $?"; grep -v -i "warn" "$OUT/e2e.log" | tail -20
    rm -rf /dev/shm/qwen3-4b-random
    timeout 300 python3 benchmarks/bench_gpu.py --longest --out "$OUT/longest.jsonl" > "$OUT/longest.log" 2>&1
    echo "longest exit $?"; tail -c 3000 "$OUT/longest.log"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run"; exit 2 ;;
esac
