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

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== cargo bench --no-run --features peers (every bench, the peers' too, and ipcprop)"
# Cargo builds the crate's binaries too when it builds benches (as for integration tests),
# with the benches' features and profile: the smoke run below uses that ipcprop, where
# `cargo run --profile bench` would compile the crate a second time (without the
# dev-dependencies some crates get other features). Its path comes from cargo's JSON
# messages (diagnostics still print as usual), whatever the target directory.
cargo bench --no-run --features peers --message-format=json-render-diagnostics >"$out/build.json"
ipcprop=$(python3 - "$out/build.json" <<'PY'
import json, sys

exes = set()
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or m["profile"]["test"]:
        continue
    if m["target"]["name"] == "ipcprop" and "bin" in m["target"]["kind"] and m.get("executable"):
        exes.add(m["executable"])
if len(exes) != 1:
    sys.exit(f"cargo bench --no-run built {len(exes)} ipcprop executables: {sorted(exes)}")
print(exes.pop())
PY
)
echo "ipcprop: $ipcprop"

echo "== cargo clippy --all-targets --features peers -- -D warnings"
cargo clippy --all-targets --features peers -- -D warnings

echo "== ipcprop bench --peers (smoke: 5 ms per measurement)"
# The binary `cargo bench --no-run` built above (bench profile, the peers' features).
"$ipcprop" bench --peers --budget-ms 5 --plot "$out/bench.svg" | tee "$out/table.txt"
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

echo "== cargo test --profile bench --features peers --lib bench::peers (the peers' own tests)"
# The peer runs' unit tests (iceoryx2's waits and clean-up, SQLite's pragmas, yaque's
# errors) need the feature; in the bench profile they reuse what was built above.
cargo test --profile bench --features peers --lib bench::peers
echo "ci/bench.sh: the instrument runs"
