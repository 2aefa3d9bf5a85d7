#!/usr/bin/env bash
# The project's checks, as CI runs them: formatting, lints, tests, docs.
# Run from anywhere: bash ci/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== cargo test"
cargo test

echo "== the lean library: cargo clippy and cargo test --no-default-features, its dependencies"
# What a `default-features = false` user builds: the transports alone, their own tests
# (the ones that need the harness declare `required-features` in Cargo.toml).
cargo clippy --all-targets --no-default-features -- -D warnings
cargo test --no-default-features
bash ci/lean-deps.sh

echo "== cargo doc --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
# The private items' documentation too: its links are checked the same way.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items

echo "== no stray processes"
# Every test reaps its children; anything still running from this build is a leak.
strays=""
for d in /proc/[0-9]*; do
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case "$exe" in "$PWD"/target/*) strays="$strays ${d#/proc/}:$(basename "$exe")" ;; esac
done
if [ -n "$strays" ]; then
  echo "processes left behind by the tests:$strays" >&2
  exit 1
fi
echo "ci/test.sh: all checks passed"
