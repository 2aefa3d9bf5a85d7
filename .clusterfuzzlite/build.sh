#!/usr/bin/env bash
# Builds the cargo-fuzz targets for ClusterFuzzLite / OSS-Fuzz (which set $OUT and the
# sanitizer flags), or locally: `bash .clusterfuzzlite/build.sh` puts the fuzzer binaries
# and their seed corpora in ./out (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
if [ -n "${SANITIZER:-}" ]; then
  cargo fuzz build -O            # flags come from the OSS-Fuzz environment
elif cargo +nightly --version >/dev/null 2>&1; then
  cargo +nightly fuzz build -O   # AddressSanitizer
else
  cargo fuzz build -O -s none
fi
bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release
for target in $(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^ipcprop-fuzz$'); do
  cp "$bin_dir/$target" "$OUT/"
  if [ -d "fuzz/corpus/$target" ]; then
    (cd "fuzz/corpus/$target" && zip -q -r "$OUT/${target}_seed_corpus.zip" .) || true
  fi
done
echo "fuzzers in $OUT"
