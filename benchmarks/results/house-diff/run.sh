#!/usr/bin/env bash
# The quickstart flow through the CLI, in a fresh studio home, every answer saved as JSON.
# usage: run.sh TREE OUT   (TREE: the worktree whose code runs, e.g. /work/wt-before; OUT: a folder)
set -euo pipefail
TREE=$1; OUT=$2
mkdir -p "$OUT"
export STUDIO_HOME=$(mktemp -d /tmp/house-diff-home.XXXXXX)
mkdir -p "$STUDIO_HOME/models"
# the tests' converted embedded model, hard-linked (as benchmarks/bench_outcome.py's studio_home())
cp -al /work/main/.venv/.test-cache/smollm2-135m-instruct "$STUDIO_HOME/models/"
echo "home: $STUDIO_HOME" > "$OUT/home.txt"
cd "$TREE"
st() { PYTHONPATH="$TREE" "$TREE/.venv/bin/python" -m studio "$@"; }
st data prepare --json --name faq --heldout assets/sample/product_faq_heldout.jsonl \
   assets/sample/product_faq.jsonl > "$OUT/data_prepare.json"
st train --json --preset cpu-quickstart --dataset faq \
   --set train.max_steps=10 --set train.eval_every=5 --set train.seed=42 > "$OUT/train.json"
RUN=$("$TREE/.venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT/train.json")
st runs show --json "$RUN" > "$OUT/runs_show.json"
st report --json --run "$RUN" > "$OUT/report.json"
st export --json --run "$RUN" --format adapter > "$OUT/export_adapter.json"
st export --json --run "$RUN" --format gguf --quant q8_0 > "$OUT/export_gguf_q8_0.json"
echo done > "$OUT/done.txt"
