#!/usr/bin/env bash
# The lean library stays lean: a user who depends on ipcprop with
# `default-features = false` builds nix, memmap2, thiserror and crc32c and their own
# dependencies, nothing else. Fails, naming the newcomers, if the normal dependency tree of
# `--no-default-features` holds a crate outside the list below. A new crate in it is a
# decision: put it behind a feature, or add it here on purpose.
# Run from anywhere: bash ci/lean-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
allowed="
ipcprop
nix bitflags cfg-if libc memoffset
memmap2
thiserror thiserror-impl proc-macro2 quote syn unicode-ident
crc32c
"
crates=$(cargo tree -e normal --no-default-features --prefix none --format '{p}' \
  | awk '{print $1}' | sort -u)
unexpected=""
for c in $crates; do
  case " $(echo $allowed) " in *" $c "*) ;; *) unexpected="$unexpected $c" ;; esac
done
if [ -n "$unexpected" ]; then
  echo "crates a default-features = false user would build, not in ci/lean-deps.sh's list:$unexpected" >&2
  exit 1
fi
echo "ci/lean-deps.sh: the lean library builds $(echo "$crates" | wc -l) crates (itself included)"
