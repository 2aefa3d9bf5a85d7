#!/usr/bin/env bash
# The benchmark instrument runs on a fresh clone: every criterion bench compiles, and a
# short `ipcprop bench` (a few ms per measurement: a smoke run, not figures to quote)
# prints its table and writes its chart. For real figures: `cargo run --release -- bench
# --plot bench.svg` (about a minute) or `cargo bench`.
# Run from anywhere: bash ci/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo bench --no-run"
cargo bench --no-run

echo "== ipcprop bench (smoke: 5 ms per measurement)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --release -- bench --budget-ms 5 --plot "$out/bench.svg" | tee "$out/table.txt"
grep -q "^targets (design targets" "$out/table.txt"
python3 -c "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" "$out/bench.svg"
echo "ci/bench.sh: the instrument runs"
