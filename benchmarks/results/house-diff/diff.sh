#!/usr/bin/env bash
# Normalise both sides (normalise.py) and diff them file by file into diff.txt.
set -uo pipefail
cd "$(dirname "$0")"
rm -rf normalised && python3 normalise.py before normalised/before && python3 normalise.py after normalised/after
: > diff.txt
for f in data_prepare train runs_show report export_adapter export_gguf_q8_0; do
  echo "### $f.json" >> diff.txt
  if [ ! -s before/$f.json ] || [ ! -s after/$f.json ]; then echo "(not written yet on one side)" >> diff.txt; continue; fi
  diff -u normalised/before/$f.json normalised/after/$f.json >> diff.txt && echo "(identical)" >> diff.txt
done
cat diff.txt
