#!/usr/bin/env bash
# Fuzz smoke run: every cargo-fuzz target for FUZZ_SECONDS (default 30) each, with
# AddressSanitizer on the nightly toolchain where there is one (`cargo fuzz -s none` on
# stable otherwise). Fails on any crash; the input that crashed is left in
# fuzz/artifacts/<target>/ (commit it to fuzz/regressions/<target>/ once fixed: cargo test
# replays it). New inputs go to a scratch corpus, so the committed seed corpus stays as it is.
#
# A long campaign locally: FUZZ_SECONDS=600 bash ci/fuzz.sh (or one target:
#   cargo +nightly fuzz run queue_ops fuzz/corpus/queue_ops -- -max_total_time=3600 -jobs=2)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if cargo +nightly --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
  sanitizer=()
  echo "== fuzzing with AddressSanitizer (nightly), ${seconds}s per target"
else
  fuzz=(cargo fuzz)
  sanitizer=(-s none)
  echo "== fuzzing without sanitizer (stable), ${seconds}s per target"
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${fuzz[@]}" build "${sanitizer[@]}"
for target in $("${fuzz[@]}" list); do
  mkdir -p "$scratch/$target"
  echo "== $target"
  log="$scratch/$target.log"
  if ! "${fuzz[@]}" run "${sanitizer[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units|^stat::peak_rss' "$log" || true
done
echo "ci/fuzz.sh: every target ran ${seconds}s without a crash"
