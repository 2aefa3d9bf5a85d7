#!/usr/bin/env bash
# loom model checks of the ring's protocol (tests/loom.rs), with a stated preemption bound.
# Its own target directory, so the cfg does not invalidate the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export RUSTFLAGS="--cfg ipcprop_loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
echo "== loom (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
cargo test --release --no-default-features --test loom -- --test-threads=2
