#!/usr/bin/env bash
# The benchmark instrument runs on a fresh clone: every criterion bench compiles, and a
# short `ipcprop bench` (a few ms per measurement: a smoke run, not figures to quote)
# prints its table and writes its chart. For real figures: `cargo run --release -- bench
# --plot bench.svg` (about a minute) or `cargo bench`.
# Run from anywhere: bash ci/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# No debug info in this check's optimized builds: they compile and link faster.
export CARGO_PROFILE_BENCH_DEBUG=0

echo "== cargo bench --no-run --features peers (every bench, the peers' too)"
cargo bench --no-run --features peers

echo "== cargo clippy --all-targets --features peers -- -D warnings"
cargo clippy --all-targets --features peers -- -D warnings

echo "== ipcprop bench --peers (smoke: 5 ms per measurement)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The bench profile (release settings). It is a second build all the same: without the
# dev-dependencies, some crates get other features than under `cargo bench`.
cargo run --profile bench --features peers -- bench --peers --budget-ms 5 --plot "$out/bench.svg" |
  tee "$out/table.txt"
grep -q "^targets (design targets" "$out/table.txt"
for peer in "iceoryx2 + event" "interprocess + length prefix" "ipc-channel bytes" \
  "SQLite WAL FULL, 2 processes" "yaque, 2 processes"; do
  grep -q "$peer" "$out/table.txt" || { echo "no row for $peer" >&2; exit 1; }
done
if grep -q "not measured" "$out/table.txt"; then
  echo "a target was not measured" >&2
  exit 1
fi
python3 -c "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" "$out/bench.svg"
echo "ci/bench.sh: the instrument runs"
